#!/usr/bin/env python3
"""Benchmark: `kaudit policy simulate` throughput against merely json.loads-ing the same audit log,
and its memory at 10 % and 100 % of the input.

    python bench/bench_simulate.py [--size-mb 200] [--events FILE] [--seed 1] [--profile Default]

Uses the same generated log as bench/bench_policy_eval.py (bench/gen_events.py, same default
file and seed), pins itself to one CPU, reads the file once to warm the page cache, then times,
side by side and alternately (best of --rounds):

  json.loads   for line in file: json.loads(line)
  simulate     kaudit.simulate.simulate(): read, parse, evaluate with the composed profile,
               estimate sizes, tally rules/levels/top sources/exposure, build the report
  + baseline   the same with --baseline-profile (two policies per event), reported for reference

Memory: VmRSS and VmHWM (peak) from /proc/self/status, sampled when the simulation has read
10 % and 50 % of the input and at the end; flat memory means the peaks stop growing.

Accuracy: on the first --verify-mb MiB (default 50), every event's estimated size at each level,
with and without omitManagedFields, is compared with re-serializing the event as that level
keeps it (same escaping as the file).

Target: simulate >= 0.5 x json.loads, compared by CPU time (wall time printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import log_arguments, prepare_log  # noqa: E402


class Timer:
    """Wall-clock and CPU seconds of a block. On a shared machine the CPU time is the fair figure:
    both contenders are single-threaded, so CPU time is what they would take alone."""

    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def time_json_loads(path: str) -> Timer:
    loads = json.loads
    with Timer() as timer, open(path, "rb") as handle:
        for line in handle:
            loads(line)
    return timer


def memory_kib() -> dict[str, int]:
    """VmRSS and VmHWM of this process in KiB (empty where /proc is not available)."""
    figures: dict[str, int] = {}
    try:
        with open("/proc/self/status") as status:
            for row in status:
                key, _, value = row.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    figures[key] = int(value.split()[0])
    except OSError:
        pass
    return figures


def _profile(name: str, as_label: str):
    from kaudit.policy import PolicyOptions, compose_policy, load_policy
    from kaudit.simulate import LoadedPolicy, PolicySource

    document = compose_policy(PolicyOptions(profile=name))
    return LoadedPolicy(load_policy(document.text).policy, PolicySource(as_label, document.hash))


def time_simulate(path: str, profile: str, baseline: str | None = None) -> tuple[Timer, dict, dict]:
    """(timer, report, {"10%": memory, "50%": memory, "100%": memory})."""
    from kaudit.simulate import simulate

    size = os.path.getsize(path)
    samples: dict[str, dict[str, int]] = {}

    def observe(done: int) -> None:
        for label, fraction in (("10%", 0.1), ("50%", 0.5)):
            if label not in samples and done >= size * fraction:
                samples[label] = memory_kib()

    candidate = _profile(profile, f"profile {profile}")
    base = None if baseline is None else _profile(baseline, f"profile {baseline}")
    with Timer() as timer, open(os.devnull, "w") as quiet:
        doc = simulate(candidate, [path], base, progress_stream=quiet, observer=observe)
    samples["100%"] = memory_kib()
    return timer, doc, samples


def verify_estimates(path: str, limit_mb: float) -> tuple[int, int, int]:
    """Compare the estimator with plain re-serialization on the first ``limit_mb`` MiB of the log:
    every event at each written level, with and without omitManagedFields. The estimator reads the
    events as the simulation does (kaudit.auditlog); the oracle parses them with json and writes
    them back with Go's encoding (gen_events.go_json: the generator's own, not kaudit's).
    Returns (comparisons, mismatches, largest difference in bytes)."""
    import copy

    from gen_events import go_json
    from kaudit.auditlog import decode_event
    from kaudit.simulate.sizes import SizeEstimator, strip_managed_fields

    def reserialized(event: dict, level: str, omit: bool) -> int:
        kept = copy.copy(event)
        kept["level"] = level
        if level == "Metadata":
            kept.pop("requestObject", None)
        if level != "RequestResponse":
            kept.pop("responseObject", None)
        for key in ("requestObject", "responseObject"):
            if omit and key in kept and not (key == "requestObject" and kept.get("verb") == "patch"):
                kept[key] = strip_managed_fields(kept[key])
        return len(go_json(kept).encode()) + 1

    estimator = SizeEstimator()
    compared = mismatched = largest = 0
    read = 0
    with open(path, "rb") as handle:
        for raw in handle:
            read += len(raw)
            if read > limit_mb * 2**20:
                break
            content = raw.rstrip(b"\n")
            event, parsed = decode_event(content), json.loads(content)
            estimator.calibrate(content)
            for rank, level in ((1, "Metadata"), (2, "Request"), (3, "RequestResponse")):
                for omit in (False, True):
                    difference = abs(estimator.size(content, event, rank, level, omit) - reserialized(parsed, level, omit))
                    compared += 1
                    mismatched += difference != 0
                    largest = max(largest, difference)
    return compared, mismatched, largest


def _arguments() -> argparse.Namespace:
    """The same generated log and options as bench_policy_eval.py, plus the baseline profile."""
    parser = log_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--baseline-profile", default="AllRequestBodies")
    parser.add_argument("--verify-mb", type=float, default=50.0)
    return parser.parse_args()


def main() -> int:
    args = _arguments()
    log = prepare_log(args)
    pinned, lines = log.pinned, log.lines
    start_memory = memory_kib()
    loads: list[Timer] = []
    sims: list[Timer] = []
    memory: dict = {}
    doc: dict = {}
    for round_number in range(args.rounds):
        timer, doc, samples = time_simulate(args.events, args.profile)
        if round_number == 0:
            memory = samples  # the first run's peak is the one not inflated by earlier runs
        sims.append(timer)
        loads.append(time_json_loads(args.events))
    both, _, _ = time_simulate(args.events, args.profile, args.baseline_profile)

    mib = log.mib
    loads_cpu, sim_cpu = min(t.cpu for t in loads), min(t.cpu for t in sims)
    loads_wall, sim_wall = min(t.wall for t in loads), min(t.wall for t in sims)
    print(f"file: {args.events}, {mib:.0f} MiB, {lines} lines; {pinned}; best of {args.rounds}; "
          f"Python {sys.version.split()[0]}")
    for label, cpu, wall in (("json.loads only", loads_cpu, loads_wall),
                             (f"simulate {args.profile}", sim_cpu, sim_wall),
                             (f"  + baseline {args.baseline_profile}", both.cpu, both.wall)):
        print(f"{label:<30}: {mib / cpu:6.1f} MiB/s {lines / cpu:8.0f} lines/s  (CPU {cpu:.2f} s, wall {wall:.2f} s)")
    ratio = loads_cpu / sim_cpu
    print(f"simulate / json.loads (CPU time) = {ratio:.2f} (target >= 0.50): {'met' if ratio >= 0.5 else 'NOT met'}; "
          f"by wall time {loads_wall / sim_wall:.2f}")
    print(f"memory (KiB) before: {start_memory}; at 10 % of the input: {memory.get('10%')}; "
          f"at 50 %: {memory.get('50%')}; at 100 %: {memory.get('100%')}")
    totals = doc["policy"]["totals"]
    print(f"report: {doc['input']['events']} events, {doc['input']['malformedLines']} malformed; "
          f"{args.profile} writes {totals['events']} events, {totals['bytes'] / 2**20:.1f} MiB "
          f"of {doc['input']['recordedBytes'] / 2**20:.1f} MiB recorded; exposure {doc['policy']['exposure']['events']}")
    if args.verify_mb > 0:
        compared, mismatched, largest = verify_estimates(args.events, args.verify_mb)
        print(f"estimates vs re-serialization on the first {args.verify_mb:g} MiB: {compared} comparisons, "
              f"{mismatched} differ, largest difference {largest} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
