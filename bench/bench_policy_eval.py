#!/usr/bin/env python3
"""Benchmark: `kaudit policy eval` throughput against merely json.loads-ing the same audit log.

    python bench/bench_policy_eval.py [--size-mb 200] [--events FILE] [--seed 1] [--profile Default] [--rounds 5]

Generates the log with bench/gen_events.py unless FILE already holds at least --size-mb MiB of
it, pins itself to one CPU, reads the file once to warm the page cache, then times, side by side
and alternately, --rounds times each:

  json.loads   for line in file: json.loads(line)
  reader       reading and decoding only (_common.time_reader): the floor of anything built on
               the audit-event reader; what is left under the target is printed
  eval         the CLI's own loop (kaudit.cli.policy.evaluate_lines): read, decode with the
               audit-event reader, evaluate with the composed profile, write one JSON result per
               line (to /dev/null)

and compares the medians. Memory: VmRSS and VmHWM (peak) when eval has read 10 % of the input
and at the end, in the first round (flat memory: the figures stop growing).

Target: eval >= 4 x json.loads by median CPU time (wall time printed too; on a machine shared
with other work the CPU time is the fair figure), and RSS at most 64 MiB.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    Timer, floor_line, log_arguments, machine_load, memory_kib, prepare_log, ratio_line, time_json_loads,
    time_reader, timing_line,
)

TARGET = 4.0
MEMORY_LIMIT_KIB = 64 * 1024


def time_eval(path: str, profile: str, lines: int) -> tuple[Timer, int, dict]:
    """(timer, malformed lines, {"10%": memory, "100%": memory})."""
    from kaudit.cli.policy import evaluate_lines
    from kaudit.policy import PolicyOptions, compose_policy, load_policy
    from kaudit.policy.evaluate import Evaluator

    memory = {}
    with Timer() as timer:
        policy = load_policy(compose_policy(PolicyOptions(profile=profile)).text).policy
        evaluator = Evaluator(policy)
        with open(path, "rb") as handle, open(os.devnull, "w") as out:
            # The first tenth, then the rest: the evaluator (and its cache) carries over.
            bad = evaluate_lines(evaluator, itertools.islice(handle, lines // 10), out)
            memory["10%"] = memory_kib()
            bad += evaluate_lines(evaluator, handle, out)
    memory["100%"] = memory_kib()
    return timer, bad, memory


def main() -> int:
    args = log_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0])).parse_args()
    log = prepare_log(args)  # generated if needed, one CPU, page cache warm
    load_before = machine_load()
    loads: list[Timer] = []
    evals: list[Timer] = []
    floor: list[Timer] = []
    bad, memory = 0, {}
    for round_number in range(args.rounds):
        loads.append(time_json_loads(args.events))
        floor.append(time_reader(args.events))
        timer, bad, samples = time_eval(args.events, args.profile, log.lines)
        evals.append(timer)
        if round_number == 0:
            memory = samples
    print(f"file: {args.events}, {log.mib:.0f} MiB, {log.lines} events; {log.pinned}; {args.rounds} rounds each, "
          f"alternating; Python {sys.version.split()[0]}; {load_before} before, {machine_load()} after")
    print(timing_line("json.loads only", loads, log.mib, log.lines))
    print(timing_line(f"eval {args.profile}", evals, log.mib, log.lines) + f"  malformed lines: {bad}")
    print(timing_line("reader alone (read, decode)", floor, log.mib, log.lines))
    print(ratio_line("eval", loads, evals, TARGET))
    print(floor_line(loads, floor, TARGET))
    peak = max(sample.get("VmHWM", 0) for sample in memory.values())
    print(f"memory (KiB) at 10 % of the input: {memory.get('10%')}; at 100 %: {memory.get('100%')}; "
          f"peak {'<=' if peak <= MEMORY_LIMIT_KIB else '>'} 64 MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
