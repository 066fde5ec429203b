"""Benchmark the operator in-process against kmock (no cluster).

    python bench/bench_operator.py [--cycles 50]

Reports:
* create→Ready latency (median, p95) over N cycles of create, wait for Ready, delete: once with
  ``spec.apiServer.installPolicy: false`` (the operator alone), once with a fake policy installer
  that reports through a Lease (Ready then waits for PolicyInstalled, as in a cluster; the
  operator's re-read of the reports is shortened to 10 ms here, 5 s by default);
* API requests per reconcile on create, split into reads (GET, watches excluded) and writes, and
  the write budget: number of rendered objects + kopf's bookkeeping patch + status patches;
* writes while idle: the resync interval compressed to 0.05 s for 3 s of wall time (each resync
  is a full reconcile; the default interval is 300 s, so a handful of resyncs is more than 5
  minutes' worth). looptime was tried for a fast-forwarded 5 minutes: with kmock's real sockets in
  the same event loop, kopf's watch timeouts then spin the loop (4 minutes of CPU for 5 fake
  minutes, 0 writes), so the compressed interval is used instead;
* resident memory of this process once idle (operator + renderer + the kmock server itself, so an
  upper bound for the operator alone).

Targets (issue 4): writes on create = objects + at most 2 status patches; zero writes when
converged; median create→Ready < 250 ms; idle RSS < 80 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import kmock  # noqa: E402
import yaml  # noqa: E402

from kaudit.render import render  # noqa: E402
from operator_support import (COLLECTIONS, ApplyEmulator, collection, is_ready, prepare, running_operator,  # noqa: E402
                              runtime_for, until, writes)


NO_INSTALLER = {"agent": {"mode": "Managed"}, "apiServer": {"installPolicy": False}}


def handled(server, name: str) -> bool:
    meta = server.objects[COLLECTIONS, None, name]["metadata"]
    return "kaudit.dev/last-handled-configuration" in (meta.get("annotations") or {})


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
        elif request.url.path.endswith("/events") or "/leases" in request.url.path:
            continue  # Events, and the fake installer's node reports, are not object writes
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
            await until(lambda: handled(server, "probe"))
            await asyncio.sleep(0.3)  # let the drift events from kaudit's own applies settle
            reads, writes_ = operator_requests(server, start)
            writes_ -= 1  # the benchmark's own POST
            reconciles = sum(runtime.state.metrics.reconciles.values())
            status_patches = sum(1 for r in writes(server, start) if r.url.path.endswith("/status"))
            print(f"objects rendered: {objects}")
            print(f"create: {reconciles} reconcile(s) (one more when the installer's report came after the first; "
                  f"the watch events of kaudit's own applies are skipped), {reads} reads, {writes_} writes = "
                  f"{objects} applies + {status_patches} status patch(es) "
                  f"+ {writes_ - objects - status_patches} kopf bookkeeping patch(es)")
            print(f"per reconcile: {reads / reconciles:.1f} reads, {writes_ / reconciles:.2f} writes")
            await server.delete("/apis/kaudit.dev/v1alpha1/auditcollections/probe")
            await asyncio.sleep(0.2)

            for label, spec, count in (
                ("operator only (spec.apiServer.installPolicy: false)", NO_INSTALLER, cycles),
                ("with the policy installer's report in the loop (a fake installer, 5 ms poll)", None,
                 max(10, cycles // 2)),
            ):
                await cycle_latencies(server, label, spec, count)

            await server.post("/apis/kaudit.dev/v1alpha1/auditcollections", json=collection("idle"))
            await until(lambda: is_ready(server, "idle") and handled(server, "idle"))

        # Idle: one converged collection, after an operator restart, with the resync compressed.
        runtime = runtime_for(server, resync_interval=0.05)
        start = len(list(server))
        async with running_operator(server, runtime):
            await until(lambda: runtime.state.metrics.reconciles.get(("resume", "ready"), 0) >= 1)
            _, restart_writes = operator_requests(server, start)
            print(f"restart: {restart_writes} writes")
            start = len(list(server))
            before = runtime.state.metrics.reconciles.copy()
            await asyncio.sleep(3.0)
            resyncs = sum(v for k, v in runtime.state.metrics.reconciles.items() if k[0] == "resync") - \
                sum(v for k, v in before.items() if k[0] == "resync")
            _, idle_writes = operator_requests(server, start)
            print(f"idle: {resyncs} resyncs, {idle_writes} writes")
            print(f"RSS of this process (operator + kmock and its request log + renderer): {rss_mib():.1f} MiB")

        print(f"idle RSS of 'kaudit run' as its own process: {await subprocess_rss(server):.1f} MiB")


async def cycle_latencies(server, label: str, spec: dict | None, cycles: int) -> None:
    latencies = []
    stuck = 0
    for cycle in range(cycles):
        name = f"bench-{'a' if spec else 'b'}{cycle}"
        body = collection(name) if spec is None else collection(name, spec=spec)
        began = time.perf_counter()
        await server.post("/apis/kaudit.dev/v1alpha1/auditcollections", json=body)
        try:
            await until(lambda: is_ready(server, name), timeout=2.0, interval=0.001)
        except AssertionError:  # counted and printed, not hidden
            stuck += 1
        else:
            latencies.append(time.perf_counter() - began)
        await until(lambda: handled(server, name))  # kopf's own bookkeeping comes after Ready
        await server.delete(f"/apis/kaudit.dev/v1alpha1/auditcollections/{name}")
        await until(lambda: server.objects[COLLECTIONS, None, name].history[-1] is None)
        # kmock matches each request against its whole request log (quadratic over a long run);
        # a fresh log per cycle keeps the mock's growth, not the operator, out of the figures.
        server._requests.clear()
    latencies.sort()
    p95 = latencies[max(0, int(len(latencies) * 0.95) - 1)]
    print(f"{label}: cycles not Ready within 2 s: {stuck} of {cycles}")
    print(f"  create→Ready over {len(latencies)} cycles: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"p95 {p95 * 1000:.1f} ms")


async def subprocess_rss(server) -> float:
    """Run the real command against the mock (plain HTTP kubeconfig) and read its RSS once idle."""
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": str(server.url).rstrip("/")}}],
            "users": [{"name": "kmock", "user": {"token": "bench"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
        }))
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": "kaudit-system"}
        start = len(list(server))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kaudit", "run", "--standalone", "--liveness-port", "0", "--metrics-port", "0",
            "--log-format", "text", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=open(os.environ.get("KAUDIT_BENCH_LOG", os.devnull), "w"))
        try:
            # The resume reconcile of "idle" ends with the pods listing; then the operator idles.
            await until(lambda: any("/pods" in r.url.path for r in list(server)[start:]), timeout=30)
            await asyncio.sleep(2.0)
            status = Path(f"/proc/{process.pid}/status").read_text()
            return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024
        finally:
            process.terminate()
            await process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=50)
    asyncio.run(main(parser.parse_args().cycles))
