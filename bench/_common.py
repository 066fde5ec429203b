"""What the log-replaying benchmarks share: the generated audit log, the CPU pinning, the common
command-line options and the set-up that precedes any timing.

bench_policy_eval.py and bench_simulate.py measure different things on the same input; keeping
that input and its preparation here makes their figures comparable by construction.
"""

from __future__ import annotations

import argparse
import os
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
    """Generate the log with gen_events.py unless ``path`` already holds at least ``size_mb`` MiB."""
    if os.path.exists(path) and os.path.getsize(path) >= size_mb * 1024 * 1024:
        return
    from gen_events import generate

    events, size = generate(path, size_mb, seed)
    print(f"generated {events} events ({size / 2**20:.0f} MiB) into {path}")


def log_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every log benchmark takes, with the same names and defaults."""
    parser.add_argument("--size-mb", type=float, default=200)
    parser.add_argument("--events", default=DEFAULT_EVENTS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", default="Default")
    parser.add_argument("--rounds", type=int, default=2)
    return parser


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
