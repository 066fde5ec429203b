"""Cold start of ``kaudit render``, as a whole process (what an Argo CD plugin pays on every sync).

Runs ``kaudit render -f examples/managed.yaml`` N times in fresh interpreters and reports the
median wall time beside ``python -c pass`` (the interpreter's own floor). Target: < 0.3 s.

    python bench/bench_render.py [--runs 15] [--example examples/managed.yaml]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 0.3


def timed(command: list[str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="runs per command (median reported; at least 10)")
    parser.add_argument("--example", default="examples/managed.yaml", help="AuditCollection to render")
    args = parser.parse_args()
    runs = max(args.runs, 10)

    script = shutil.which("kaudit")
    render = [script] if script else [sys.executable, "-m", "kaudit"]
    render += ["render", "-f", args.example]
    baseline = timed([sys.executable, "-c", "pass"], runs)
    timed(render, 1)  # warm the file cache and bytecode, not the interpreter
    samples = timed(render, runs)

    med, floor = statistics.median(samples), statistics.median(baseline)
    print(f"runs per command: {runs}")
    print(f"python -c pass:           median {floor * 1000:7.1f} ms  (min {min(baseline) * 1000:.1f})")
    print(f"kaudit render -f {args.example}: median {med * 1000:7.1f} ms  "
          f"(min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f})")
    print(f"kaudit's own share:       {(med - floor) * 1000:7.1f} ms")
    verdict = "meets" if med < TARGET_SECONDS else "MISSES"
    print(f"{verdict} the {TARGET_SECONDS:.1f} s target")
    return 0 if med < TARGET_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
