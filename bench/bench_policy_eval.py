#!/usr/bin/env python3
"""Benchmark: `kaudit policy eval` throughput against merely json.loads-ing the same audit log.

    python bench/bench_policy_eval.py [--size-mb 200] [--events FILE] [--seed 1] [--profile Default]

Generates the log with bench/gen_events.py unless FILE already holds at least --size-mb MiB,
pins itself to one CPU, reads the file once to warm the page cache, then times, side by side
and alternately (best of --rounds):

  json.loads   for line in file: json.loads(line)
  eval         the CLI's own loop (kaudit.cli.policy.evaluate_lines): parse, evaluate with the
               composed profile, write one JSON result per line (to /dev/null)

Target: eval >= 0.5 x json.loads. Both wall-clock and CPU time are printed: on a busy machine
the CPU-time ratio is the steadier one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import log_arguments, prepare_log  # noqa: E402


def time_json_loads(path: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds)."""
    loads = json.loads
    start, cpu = time.perf_counter(), time.process_time()
    with open(path, "rb") as handle:
        for line in handle:
            loads(line)
    return time.perf_counter() - start, time.process_time() - cpu


def time_eval(path: str, profile: str) -> tuple[float, float, int]:
    from kaudit.cli.policy import evaluate_lines
    from kaudit.policy import PolicyOptions, compose_policy, load_policy
    from kaudit.policy.evaluate import Evaluator

    start, cpu = time.perf_counter(), time.process_time()
    policy = load_policy(compose_policy(PolicyOptions(profile=profile)).text).policy
    evaluator = Evaluator(policy)
    with open(path, "rb") as handle, open(os.devnull, "w") as out:
        bad = evaluate_lines(evaluator, handle, out)
    return time.perf_counter() - start, time.process_time() - cpu, bad


def main() -> int:
    args = log_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0])).parse_args()
    log = prepare_log(args)  # generated if needed, one CPU, page cache warm
    mib, lines = log.mib, log.lines
    loads_wall = loads_cpu = eval_wall = eval_cpu = float("inf")
    bad = 0
    for _ in range(args.rounds):
        wall, cpu = time_json_loads(args.events)
        loads_wall, loads_cpu = min(loads_wall, wall), min(loads_cpu, cpu)
        wall, cpu, bad = time_eval(args.events, args.profile)
        eval_wall, eval_cpu = min(eval_wall, wall), min(eval_cpu, cpu)
    print(f"file: {args.events}, {mib:.0f} MiB, {lines} events; {log.pinned}; best of {args.rounds}; "
          f"Python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.1f}")
    print(f"json.loads only : {mib / loads_wall:7.1f} MiB/s  {lines / loads_wall:9.0f} events/s  "
          f"(wall {loads_wall:.2f} s, CPU {loads_cpu:.2f} s)")
    print(f"eval {args.profile:<10} : {mib / eval_wall:7.1f} MiB/s  {lines / eval_wall:9.0f} events/s  "
          f"(wall {eval_wall:.2f} s, CPU {eval_cpu:.2f} s)  malformed lines: {bad}")
    ratio = loads_wall / eval_wall
    print(f"eval / json.loads = {ratio:.2f} by wall time, {loads_cpu / eval_cpu:.2f} by CPU time "
          f"(target >= 0.50): {'met' if ratio >= 0.5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
