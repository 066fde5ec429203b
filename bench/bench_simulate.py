#!/usr/bin/env python3
"""Benchmark: `kaudit policy simulate` throughput against merely json.loads-ing the same audit log,
its memory at 10 %, 50 % and 100 % of the input, and the exactness of its size estimates.

    python bench/bench_simulate.py [--size-mb 200] [--events FILE] [--seed 1] [--profile Default] [--rounds 5] [--gzip]

Uses the same generated log as bench/bench_policy_eval.py (bench/gen_events.py, same default
file and seed), pins itself to one CPU, reads the file once to warm the page cache, then times,
side by side and alternately, --rounds times each, and compares the medians:

  json.loads   for line in file: json.loads(line)
  reader       reading and decoding only (_common.time_reader): the floor of anything built on
               the audit-event reader; what is left under the target is printed
  simulate     kaudit.simulate.simulate(): read, decode with the audit-event reader, evaluate with
               the composed profile, estimate sizes, tally rules/levels/top sources/exposure,
               build the report
  + baseline   the same with --baseline-profile (two policies per event), once, for reference

Memory: VmRSS and VmHWM (peak) from /proc/self/status, sampled when the simulation has read
10 % and 50 % of the input and at the end, in the first round; flat memory means the figures
stop growing.

With --gzip, the same log compressed (FILE.gz, made once) is simulated too, and the time of
reading it without simulating, less that of reading the plain file, is reported as the share
of decompression.

Accuracy: on the first --verify-mb MiB (default 50), every event's estimated size at each level,
with and without omitManagedFields, is compared with re-serializing the event as that level
keeps it, with Go's encoding (bench/gen_events.go_json).

Target: simulate >= 3 x json.loads by median CPU time (wall time printed too); RSS at most 64 MiB.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    Timer, floor_line, log_arguments, machine_load, median, memory_kib, prepare_log, ratio_line, time_json_loads,
    time_reader, timing_line,
)

TARGET = 3.0
MEMORY_LIMIT_KIB = 64 * 1024


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
    parser.add_argument("--gzip", action="store_true", help="also simulate the log gzip-compressed")
    return parser.parse_args()


def gzipped(path: str) -> str:
    """``path``.gz, compressed at gzip's default level unless it is already there and newer."""
    target = path + ".gz"
    if not os.path.exists(target) or os.path.getmtime(target) < os.path.getmtime(path):
        with open(path, "rb") as source, gzip.open(target + ".tmp", "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        os.replace(target + ".tmp", target)
    return target


def time_reading(path: str) -> Timer:
    """Reading every batch of lines the way simulate does (kaudit.simulate.inputs), nothing else."""
    from kaudit.simulate.inputs import iter_files

    with Timer() as timer:
        for _, batches in iter_files([path]):
            for _ in batches:
                pass
    return timer


def main() -> int:
    args = _arguments()
    log = prepare_log(args)
    load_before = machine_load()
    start_memory = memory_kib()
    loads: list[Timer] = []
    sims: list[Timer] = []
    floor: list[Timer] = []
    memory: dict = {}
    doc: dict = {}
    for round_number in range(args.rounds):
        loads.append(time_json_loads(args.events))
        floor.append(time_reader(args.events))
        timer, doc, samples = time_simulate(args.events, args.profile)
        if round_number == 0:
            memory = samples  # the first run's peak is the one not inflated by earlier runs
        sims.append(timer)
    both, _, _ = time_simulate(args.events, args.profile, args.baseline_profile)

    print(f"file: {args.events}, {log.mib:.0f} MiB, {log.lines} lines; {log.pinned}; {args.rounds} rounds each, "
          f"alternating; Python {sys.version.split()[0]}; {load_before} before, {machine_load()} after")
    print(timing_line("json.loads only", loads, log.mib, log.lines))
    print(timing_line(f"simulate {args.profile}", sims, log.mib, log.lines))
    print(timing_line(f"  + baseline {args.baseline_profile}", [both], log.mib, log.lines))
    print(timing_line("reader alone (read, decode)", floor, log.mib, log.lines))
    print(ratio_line("simulate", loads, sims, TARGET))
    print(floor_line(loads, floor, TARGET))
    peak = max(sample.get("VmHWM", 0) for sample in memory.values())
    print(f"memory (KiB) before: {start_memory}; at 10 % of the input: {memory.get('10%')}; "
          f"at 50 %: {memory.get('50%')}; at 100 %: {memory.get('100%')}; "
          f"peak {'<=' if peak <= MEMORY_LIMIT_KIB else '>'} 64 MiB")
    totals = doc["policy"]["totals"]
    print(f"report: {doc['input']['events']} events, {doc['input']['malformedLines']} malformed; "
          f"{args.profile} writes {totals['events']} events, {totals['bytes'] / 2**20:.1f} MiB "
          f"of {doc['input']['recordedBytes'] / 2**20:.1f} MiB recorded; exposure {doc['policy']['exposure']['events']}")
    if args.gzip:
        compressed = gzipped(args.events)
        gz_sims, gz_reads, plain_reads = [], [], []
        for _ in range(args.rounds):
            gz_sims.append(time_simulate(compressed, args.profile)[0])
            gz_reads.append(time_reading(compressed))
            plain_reads.append(time_reading(args.events))
        total = median([t.cpu for t in gz_sims])
        decompression = median([t.cpu for t in gz_reads]) - median([t.cpu for t in plain_reads])
        print(f"gzip input ({os.path.getsize(compressed) / 2**20:.0f} MiB): simulate CPU median {total:.2f} s, "
              f"of which decompression {decompression:.2f} s ({decompression / total:.0%}); "
              f"simulate / json.loads of the plain lines = {median([t.cpu for t in loads]) / total:.2f}")
    if args.verify_mb > 0:
        compared, mismatched, largest = verify_estimates(args.events, args.verify_mb)
        print(f"estimates vs re-serialization on the first {args.verify_mb:g} MiB: {compared} comparisons, "
              f"{mismatched} differ, largest difference {largest} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
