#!/usr/bin/env python3
"""Benchmark: the detection engine running kaudit's whole pack over a generated audit log.

    python bench/bench_detect.py [--size-mb 200] [--events FILE] [--seed 1] [--rounds 2]

Generates the log with bench/gen_events.py unless FILE already holds at least --size-mb MiB,
pins itself to one CPU, reads the file once to warm the page cache, then times, alternately
(best of --rounds):

  json.loads   for line in file: json.loads(line)
  pack         the audit-event reader (kaudit.auditlog.event_mappings: the same checks as
               simulate's, each event as a dict), then every pack rule's queries and signal logic
               on each event (kaudit.detect.signals.RuleSet.feed)

Target: pack >= 0.5 x json.loads events/s, i.e. the rules cost no more than parsing. Wall-clock
and CPU time are both printed; on a busy machine the CPU-time ratio is the steadier one. The
signals raised per rule are printed too, so a change in matching shows up beside the timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import log_arguments, prepare_log, time_json_loads  # noqa: E402


def time_pack(path: str) -> tuple[float, float, Counter]:
    """(wall seconds, CPU seconds, signals per rule)."""
    from kaudit.detect.pack import pack_rules
    from kaudit.detect.signals import RuleSet

    from kaudit.auditlog import event_mappings

    start, cpu = time.perf_counter(), time.process_time()
    feed = RuleSet(pack_rules()).feed
    signals: Counter = Counter()
    with open(path, "rb") as handle:
        while lines := handle.readlines(1 << 20):
            for event in event_mappings(lines):
                if isinstance(event, dict):
                    for signal in feed(event):
                        signals[signal.rule] += 1
    return time.perf_counter() - start, time.process_time() - cpu, signals


def main() -> int:
    args = log_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0])).parse_args()
    log = prepare_log(args)
    loads_wall = loads_cpu = pack_wall = pack_cpu = float("inf")
    signals: Counter = Counter()
    for _ in range(args.rounds):
        timer = time_json_loads(args.events)
        wall, cpu = timer.wall, timer.cpu
        loads_wall, loads_cpu = min(loads_wall, wall), min(loads_cpu, cpu)
        wall, cpu, signals = time_pack(args.events)
        pack_wall, pack_cpu = min(pack_wall, wall), min(pack_cpu, cpu)
    mib, lines = log.mib, log.lines
    print(f"file: {args.events}, {mib:.0f} MiB, {lines} events; {log.pinned}; best of {args.rounds}; "
          f"Python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.1f}")
    print(f"json.loads only : {lines / loads_wall:9.0f} events/s  (wall {loads_wall:.2f} s, CPU {loads_cpu:.2f} s)")
    print(f"pack (12 rules) : {lines / pack_wall:9.0f} events/s  (wall {pack_wall:.2f} s, CPU {pack_cpu:.2f} s)")
    ratio, cpu_ratio = loads_wall / pack_wall, loads_cpu / pack_cpu
    print(f"pack / json.loads = {ratio:.2f} by wall time, {cpu_ratio:.2f} by CPU time (target >= 0.50): "
          f"{'met' if cpu_ratio >= 0.5 else 'NOT met'}")
    for rule, count in sorted(signals.items()):
        print(f"  {count:7d} signal(s)  {rule}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
