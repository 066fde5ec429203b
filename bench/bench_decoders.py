#!/usr/bin/env python3
"""Benchmark: JSON decoders on the lines of the generated audit log, the measurement behind the
choice of the audit-event reader's decoder (kaudit.auditlog).

    python bench/bench_decoders.py [--size-mb 200] [--events FILE] [--seed 1] [--rounds 5]

Reads the lines into memory once, pins itself to one CPU and times, by CPU time, the median of
--rounds passes of each decoder over every line:

  json.loads          the standard library: a dict of every field
  orjson.loads        a dict of every field (only if orjson is installed: pip install orjson)
  msgspec (dict)      msgspec.json.decode into plain Python objects
  msgspec (reader)    msgspec into the reader's typed structs (kaudit.auditlog.AuditEvent):
                      only the fields kaudit looks at are built, bodies kept as raw spans
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import log_arguments, machine_load, median, prepare_log  # noqa: E402


def contenders() -> dict:
    import msgspec

    from kaudit.auditlog import AuditEvent

    found = {"json.loads": json.loads}
    try:
        import orjson
    except ImportError:
        pass
    else:
        found["orjson.loads"] = orjson.loads
    found["msgspec (dict)"] = msgspec.json.Decoder().decode
    found["msgspec (reader)"] = msgspec.json.Decoder(AuditEvent).decode
    return found


def main() -> int:
    args = log_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0])).parse_args()
    log = prepare_log(args)
    with open(args.events, "rb") as handle:
        lines = handle.read().splitlines()
    print(f"file: {args.events}, {log.mib:.0f} MiB, {len(lines)} lines in memory; {log.pinned}; "
          f"median of {args.rounds}; Python {sys.version.split()[0]}; {machine_load()}")
    baseline = None
    for name, decode in contenders().items():
        timings = []
        for _ in range(args.rounds):
            gc.disable()
            start = time.process_time()
            for line in lines:
                decode(line)
            timings.append(time.process_time() - start)
            gc.enable()
        cpu = median(timings)
        baseline = baseline or cpu
        print(f"{name:<18}: {log.mib / cpu:7.0f} MiB/s  (CPU median {cpu:.2f} s)  {baseline / cpu:4.1f} x json.loads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
