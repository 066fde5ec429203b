#!/usr/bin/env python3
"""Benchmark: coverage of kaudit's whole pack under each built-in profile (what the operator pays
once per rendered policy when spec.detection asks for the pack; it then caches the verdict).

    python bench/bench_coverage.py [--runs 3]

Prints, per profile, the median CPU and wall seconds of ``kaudit.detect.coverage.check(policy,
pack)`` over --runs runs (the first run of the process is included: the operator pays it too).
No target: the figure decides whether the operator may run coverage on the event loop (it does
not: it runs it in a worker thread, docs/detection.md).
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from kaudit.detect.coverage import check
    from kaudit.detect.pack import pack_rules
    from kaudit.policy import PROFILES, PolicyOptions, compose_policy, load_policy

    rules = pack_rules()
    print(f"{'profile':<20} {'CPU s':>7} {'wall s':>7}")
    for profile in PROFILES:
        policy = load_policy(compose_policy(PolicyOptions(profile=profile)).text).policy
        cpu, wall = [], []
        for _ in range(args.runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            check(policy, rules)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        print(f"{profile:<20} {statistics.median(cpu):>7.2f} {statistics.median(wall):>7.2f}")


if __name__ == "__main__":
    main()
