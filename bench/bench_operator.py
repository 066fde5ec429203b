"""Benchmark the operator in-process against kmock (no cluster).

    python bench/bench_operator.py [--cycles 50]

Reports:
* create→Ready latency (median, p95) over N cycles of create, wait for Ready, delete;
* API requests per reconcile on create, split into reads (GET, watches excluded) and writes, and
  the write budget: number of rendered objects + kopf's bookkeeping patch + status patches;
* writes while idle: the resync timer compressed to 0.05 s and run for 3 s (≈ 60 resyncs; the
  default interval is 300 s, so this covers far more than 5 minutes of idle resync);
* resident memory of this process once idle (operator + renderer + the kmock server itself, so an
  upper bound for the operator alone).

Targets (issue 4): writes on create = objects + at most 2 status patches; zero writes when
converged; median create→Ready < 250 ms; idle RSS < 80 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import kmock  # noqa: E402

from kaudit.render import render  # noqa: E402
from operator_support import (COLLECTIONS, ApplyEmulator, collection, is_ready, prepare, running_operator,  # noqa: E402
                              runtime_for, until, writes)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def operator_requests(server, since: int) -> tuple[int, int]:
    reads = writes_ = 0
    for request in list(server)[since:]:
        if request.resource is None or request.params.get("watch"):
            continue
        if request.method == kmock.method.GET:
            reads += 1
        elif request.url.path.endswith("/events"):
            continue
        else:
            writes_ += 1
    return reads, writes_


async def main(cycles: int) -> None:
    async with ApplyEmulator() as server, kmock.Server(server):
        prepare(server)
        runtime = runtime_for(server, resync_interval=3600)
        objects = len(render(collection(), namespace="kaudit-system", image="kaudit/kaudit:test").objects)
        async with running_operator(server, runtime):
            # One create, measured request by request.
            start = len(list(server))
            await server.post("/apis/kaudit.dev/v1alpha1/auditcollections", json=collection("probe"))
            await until(lambda: is_ready(server, "probe"))
            await until(lambda: "kaudit.dev/last-handled-configuration" in (
                server.objects[COLLECTIONS, None, "probe"]["metadata"].get("annotations") or {}))
            await asyncio.sleep(0.3)  # let the drift events from kaudit's own applies settle
            reads, writes_ = operator_requests(server, start)
            writes_ -= 1  # the benchmark's own POST
            reconciles = sum(runtime.metrics.reconciles.values())
            status_patches = sum(1 for r in writes(server, start) if r.url.path.endswith("/status"))
            print(f"objects rendered: {objects}")
            print(f"create: {reconciles} reconciles (1 create + drift events of kaudit's own applies), "
                  f"{reads} reads, {writes_} writes = {objects} applies + {status_patches} status patch(es) "
                  f"+ {writes_ - objects - status_patches} kopf bookkeeping patch(es)")
            print(f"per reconcile: {reads / reconciles:.1f} reads, {writes_ / reconciles:.2f} writes")
            await server.delete("/apis/kaudit.dev/v1alpha1/auditcollections/probe")
            await asyncio.sleep(0.2)

            latencies = []
            stuck = 0
            for cycle in range(cycles):
                name = f"bench-{cycle}"
                began = time.perf_counter()
                await server.post("/apis/kaudit.dev/v1alpha1/auditcollections", json=collection(name))
                try:
                    await until(lambda: is_ready(server, name), timeout=2.0, interval=0.001)
                except AssertionError:  # reported below, not hidden: a known open problem
                    stuck += 1
                else:
                    latencies.append(time.perf_counter() - began)
                await server.delete(f"/apis/kaudit.dev/v1alpha1/auditcollections/{name}")
                await until(lambda: server.objects[COLLECTIONS, None, name].history[-1] is None)
                await asyncio.sleep(0.05)  # let kopf drop the deleted collection from its index
            latencies.sort()
            p95 = latencies[max(0, int(len(latencies) * 0.95) - 1)]
            print(f"cycles not Ready within 2 s: {stuck} of {cycles}")
            print(f"create→Ready over {len(latencies)} cycles: median {statistics.median(latencies) * 1000:.1f} ms, "
                  f"p95 {p95 * 1000:.1f} ms")

        # Idle: one converged collection, the resync timer compressed.
        await server.post("/apis/kaudit.dev/v1alpha1/auditcollections", json=collection("idle"))
        runtime = runtime_for(server, resync_interval=0.05)
        async with running_operator(server, runtime):
            await until(lambda: is_ready(server, "idle"))
            await asyncio.sleep(0.5)
            start = len(list(server))
            before = runtime.metrics.reconciles.copy()
            await asyncio.sleep(3.0)
            resyncs = sum(v for k, v in runtime.metrics.reconciles.items() if k[0] == "resync") - \
                sum(v for k, v in before.items() if k[0] == "resync")
            _, idle_writes = operator_requests(server, start)
            print(f"idle: {resyncs} resyncs, {idle_writes} writes")
            print(f"idle RSS (operator + kmock + renderer in one process): {rss_mib():.1f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=50)
    asyncio.run(main(parser.parse_args().cycles))
