"""What the log-replaying benchmarks share: the generated audit log, the CPU pinning, the common
command-line options and the set-up that precedes any timing.

bench_policy_eval.py and bench_simulate.py measure different things on the same input; keeping
that input and its preparation here makes their figures comparable by construction.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass

DEFAULT_EVENTS = "/tmp/kaudit-bench-audit.log"


def pin_one_cpu() -> str:
    """Run on one CPU only, so the timings do not depend on the scheduler moving the process."""
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def ensure_events(path: str, size_mb: float, seed: int) -> None:
    """Generate the log with gen_events.py unless ``path`` already holds at least ``size_mb`` MiB
    of what this generator writes for ``seed`` (its first line tells)."""
    from gen_events import generate, iter_lines

    if os.path.exists(path) and os.path.getsize(path) >= size_mb * 1024 * 1024:
        with open(path, "rb") as handle:
            if handle.readline() == next(iter_lines(seed)).encode():
                return

    events, size = generate(path, size_mb, seed)
    print(f"generated {events} events ({size / 2**20:.0f} MiB) into {path}")


def log_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every log benchmark takes, with the same names and defaults."""
    parser.add_argument("--size-mb", type=float, default=200)
    parser.add_argument("--events", default=DEFAULT_EVENTS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", default="Default")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each contender (the median counts)")
    return parser


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
    """The yardstick: ``for line in file: json.loads(line)``."""
    loads = json.loads
    with Timer() as timer, open(path, "rb") as handle:
        for line in handle:
            loads(line)
    return timer


def time_reader(path: str) -> Timer:
    """The floor of any command built on the audit-event reader: read the lines in the batches
    simulate and eval read (kaudit.simulate.inputs.BATCH_BYTES) and decode them
    (kaudit.auditlog.decode_lines), nothing else. A command's time over this floor is its own work."""
    from kaudit.auditlog import decode_lines
    from kaudit.simulate.inputs import BATCH_BYTES

    with Timer() as timer, open(path, "rb") as handle:
        while batch := handle.readlines(BATCH_BYTES):
            decode_lines(batch)
    return timer


def memory_kib() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of this process in KiB (empty where /proc is not available)."""
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


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine_load() -> str:
    """The load averages, for the report: other processes share the machine's CPUs."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} {five:.1f} {fifteen:.1f} on {os.cpu_count()} CPUs"


def ratio_line(name: str, loads: list[Timer], runs: list[Timer], target: float) -> str:
    """``name / json.loads`` by median CPU time (and by median wall time), against the target."""
    by_cpu = median([t.cpu for t in loads]) / median([t.cpu for t in runs])
    by_wall = median([t.wall for t in loads]) / median([t.wall for t in runs])
    verdict = "met" if by_cpu >= target else "NOT met"
    return (f"{name} / json.loads = {by_cpu:.2f} by median CPU time (target >= {target:g}: {verdict}); "
            f"{by_wall:.2f} by median wall time")


def floor_line(loads: list[Timer], floor: list[Timer], target: float) -> str:
    """How fast the reader alone is against json.loads, and what that leaves for the rest."""
    ratio = median([t.cpu for t in loads]) / median([t.cpu for t in floor])
    left = median([t.cpu for t in loads]) / target - median([t.cpu for t in floor])
    return (f"reader alone / json.loads = {ratio:.2f} by median CPU time: at {target:g} x json.loads, "
            f"{left:.2f} s of CPU would be left for everything else")


def timing_line(label: str, timers: list[Timer], mib: float, lines: int) -> str:
    cpu = [t.cpu for t in timers]
    return (f"{label:<30}: {mib / median(cpu):7.1f} MiB/s {lines / median(cpu):9.0f} lines/s  "
            f"(CPU median {median(cpu):.2f} s, min {min(cpu):.2f}, max {max(cpu):.2f}; "
            f"wall median {median([t.wall for t in timers]):.2f} s)")


@dataclass(frozen=True)
class PreparedLog:
    path: str
    size: int  # bytes
    lines: int
    pinned: str  # how the process was pinned, for the report

    @property
    def mib(self) -> float:
        return self.size / 2**20


def prepare_log(args: argparse.Namespace) -> PreparedLog:
    """Generate the log if needed, pin to one CPU, and read the file once: that counts its lines
    and brings it into the page cache, so every timed run reads from memory."""
    ensure_events(args.events, args.size_mb, args.seed)
    pinned = pin_one_cpu()
    with open(args.events, "rb") as handle:
        lines = sum(1 for _ in handle)
    return PreparedLog(args.events, os.path.getsize(args.events), lines, pinned)
