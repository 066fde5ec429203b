"""Benchmark the operator on a real control plane (tests/realcluster/plane.py: etcd, kube-apiserver,
controller manager, scheduler, hollow nodes), not collected by pytest.

    KAUDIT_K8S_ASSETS=.cache/k8s python bench/bench_realcluster.py [--runs 20]

(``bash .ci/k8s-assets ../shared/k8s/bin .cache/k8s`` unpacks the binaries.) The operator is a real
``kaudit run --standalone`` process under the chart's ServiceAccount and RBAC; the policy installer
of each control-plane node is a real ``kaudit install-policy`` process. Request counts come from
kube-apiserver's own audit log, drift latencies from its timestamps (the user's write to the
operator's repair, both as the server saw them).

Reports, each the median of ``--runs`` runs (min and max beside it):
* create -> Ready with the installer in the loop: apply a Managed AuditCollection, wait until its
  ``Ready`` condition is True for its generation; the installer of each node is started as soon as
  the DaemonSet controller has put its pod on the node (what a kubelet with the image cached does),
  then has to fetch the policy and report it in its Lease before the operator can say Ready.
  Also split: first object applied, last object applied, both installer pods bound, each
  installer's first request (its process started and ready), both reports written. The harness
  stands in for each node's kubelet and does what a kubelet does between binding and the
  container's start, no more, and all of it inside the timed window: it sees the bound pod (a list
  every 20 ms, where a kubelet watches), asks for the pod's ServiceAccount token (TokenRequest),
  reads the policy ConfigMap for the volume, then starts the process; each node on its own thread;
* drift repaired: a deleted ConfigMap and an edited agent DaemonSet, from the user's write to
  kaudit's re-apply;
* writes on create, against the number of rendered objects (Events counted apart), until the
  operator has been quiet for 1 s longer than it may hold back a progress-only status;
* writes while idle: --resync-seconds 3 for 30 s (ten full reconciles);
* operator RSS idle, then again after 10,000 unrelated ConfigMaps.

Targets (issue: meet a real cluster): create -> Ready <= 1 s; drift <= 1 s; writes on create =
objects + <= 2; 0 idle writes; RSS <= 80 MiB and flat with 10,000 ConfigMaps.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "realcluster"))

import plane as plane_module  # noqa: E402
from kaudit.reconcile.service import STATUS_HOLD  # noqa: E402
from kaudit_harness import (Api, KauditInstall, child_writes, create_config_maps, install, object_key,  # noqa: E402
                        ready_status, rss_kib, successful, wait_settled)

RELEASE, NAMESPACE, AGENT_NAMESPACE = "kaudit-bench", "bench-system", "bench-agent"
NOISE_NAMESPACE = "bench-noise"
COLLECTION = "bench"
IDLE_RESYNC, IDLE_SECONDS = 3, 30.0
NOISE_CONFIG_MAPS = 10_000


def stamp(event: dict) -> float:
    """An audit event's completion time, as a POSIX timestamp."""
    text = event["stageTimestamp"].replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


def wait_ready(api: Api, generation: int, timeout: float = 30.0) -> float:
    """Watch the collection until Ready for ``generation``; the wall-clock time that was first seen.
    A watch, not a tight poll: a hundred GETs a second would load the very apiserver being timed."""
    path = f"/apis/kaudit.dev/v1alpha1/auditcollections?fieldSelector=metadata.name%3D{COLLECTION}"
    for event in api.watch(path, timeout):
        if event["type"] in ("ADDED", "MODIFIED") and ready_status(event["object"], generation):
            return time.time()
    raise AssertionError(f"{COLLECTION} not Ready for generation {generation} within {timeout} s")


def start_installers_when_scheduled(env: KauditInstall, workdir: Path) -> None:
    """The installer of each control-plane node, started as that node's kubelet would: each node on
    its own, as soon as the pod is bound there (see plane.start_installer)."""
    def policy_dir(node: str) -> Path:
        folder = workdir / f"policy-{node}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    env.installers.extend(env.plane.start_installers(collection=COLLECTION, namespace=NAMESPACE, policy_dir=policy_dir))


def stop_installers(env: KauditInstall) -> None:
    for installer in env.installers:
        installer.stop()
    env.installers.clear()


def create_cycle(env: KauditInstall, api: Api, workdir: Path, installers: bool = True) -> dict:
    """Create -> Ready once (installers started as their pods appear), then delete; the figures.
    Without ``installers``: ``spec.apiServer.installPolicy: false``, the operator alone."""
    plane, user = env.plane, env.user()
    mark = plane.audit_mark()
    body = env.managed(COLLECTION) if installers else env.managed(COLLECTION, apiServer={"installPolicy": False})
    began = time.time()
    status, answer = api.request("POST", "/apis/kaudit.dev/v1alpha1/auditcollections", body)
    assert status == 201, answer
    if installers:
        start_installers_when_scheduled(env, workdir)
    ready = wait_ready(api, 1)
    # Quiet for longer than the operator holds back a progress-only status (STATUS_HOLD): a
    # status write it still owes after Ready is counted too.
    wait_settled(plane, user, seconds=STATUS_HOLD + 1.0)
    events = plane.requests_since(mark, verbs=None)
    ours = successful(e for e in events if e.get("user", {}).get("username") == user)
    applies = [stamp(e) for e in child_writes(ours) if e["verb"] == "patch"]
    reports = [stamp(e) for e in successful(events) if object_key(e)[0] == "leases" and e["verb"] == "patch"
               and "policy-installer" in e.get("user", {}).get("username", "")]
    bound = [stamp(e) for e in successful(events) if object_key(e)[:2] == ("pods", NAMESPACE)
             and (e.get("objectRef") or {}).get("subresource") == "binding"]
    writes = [e for e in ours if e["verb"] in plane_module.WRITE_VERBS]
    spawned = [installer.process.started_at for installer in env.installers]
    figures = {
        "bound": (max(bound) - began) if bound else float("nan"),
        "spawned": (max(spawned) - began) if spawned else float("nan"),
        "ready": ready - began,
        "first_apply": min(applies) - began,
        "last_apply": max(applies) - began,
        "reports": (max(reports) - began) if reports else float("nan"),
        "objects": len(env.children(COLLECTION)),
        "writes": len([e for e in writes if object_key(e)[0] != "events"]),
        "events": len([e for e in writes if object_key(e)[0] == "events"]),
    }
    stop_installers(env)
    env.delete_collection(COLLECTION)
    wait_for_gone(env)
    return figures


def wait_for_gone(env: KauditInstall) -> None:
    """Until the garbage collector has taken the children; the node reports go at once (a report
    left from the last cycle, same policy hash, would make the next Ready come without an installer)."""
    env.plane.kubectl("delete", "lease", "-n", NAMESPACE, "-l", f"kaudit.dev/collection={COLLECTION}")
    plane_module.wait_for(lambda: not env.children(COLLECTION), 60, "the garbage collector", interval=0.2)


def drift_latency(env: KauditInstall, kind: str, name: str, namespace: str, *command: str) -> float:
    """From the user's write (``command``) to kaudit's re-apply of that object, as the server saw both."""
    plane, user = env.plane, env.user()
    mark = plane.audit_mark()
    plane.kubectl(*command)

    def repaired() -> list[dict]:
        return [e for e in child_writes(successful(plane.requests_since(mark, user=user)))
                if object_key(e) == (kind, namespace, name)]

    fix = plane_module.wait_for(repaired, 30, f"the repair of {kind} {name}", interval=0.05)[0]
    by_user = [e for e in successful(plane.requests_since(mark, user=plane_module.ADMIN_USER))
               if object_key(e) == (kind, namespace, name)]
    wait_settled(plane, user, seconds=1.0)
    return stamp(fix) - stamp(by_user[0])


def median_row(label: str, values: list[float], unit: str = "s", target: str = "") -> str:
    scale, fmt = (1000.0, "{:.0f} ms") if unit == "s" else (1.0, "{:.0f}")
    cells = [fmt.format(statistics.median(values) * scale), fmt.format(min(values) * scale),
             fmt.format(max(values) * scale)]
    return f"| {label} | {cells[0]} | {cells[1]} - {cells[2]} | {target} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    assets = os.environ.get(plane_module.ASSETS_ENV)
    problem = plane_module.missing_assets(assets)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="kaudit-bench-") as tmp:
        plane = plane_module.ControlPlane(Path(assets), Path(tmp) / "plane").start()
        try:
            return run(plane, Path(tmp), args.runs)
        finally:
            plane.stop()


def run(plane, workdir: Path, runs: int) -> int:
    env = install(plane, RELEASE, NAMESPACE, AGENT_NAMESPACE)
    api = Api(plane)
    operator = env.start_operator("--standalone")
    wait_settled(plane, env.user(), seconds=2.0)
    print(f"control plane up in {plane.start_seconds:.1f} s; {runs} runs each", flush=True)

    cycles = [create_cycle(env, api, workdir / f"cycle-{i}") for i in range(runs)]
    objects = cycles[0]["objects"]
    alone = [create_cycle(env, api, workdir, installers=False) for _ in range(runs)]

    # Steady state: one collection, installers running.
    api.request("POST", "/apis/kaudit.dev/v1alpha1/auditcollections", env.managed(COLLECTION))
    start_installers_when_scheduled(env, workdir / "steady")
    wait_ready(api, 1)
    wait_settled(plane, env.user(), seconds=1.0)

    config_map, daemon_set = f"{RELEASE}-agent-config", f"{RELEASE}-agent"
    deleted = [drift_latency(env, "configmaps", config_map, AGENT_NAMESPACE,
                             "delete", "configmap", "-n", AGENT_NAMESPACE, config_map) for _ in range(runs)]
    edited = [drift_latency(env, "daemonsets", daemon_set, AGENT_NAMESPACE,
                            "set", "env", "-n", AGENT_NAMESPACE, f"daemonset/{daemon_set}", "-c", "agent",
                            f"DD_LOGS_ENABLED=false{i}") for i in range(runs)]

    # Idle: restart with a short resync so the window holds ten full reconciles.
    operator.stop()
    operator = env.start_operator("--standalone", "--resync-seconds", str(IDLE_RESYNC))
    wait_settled(plane, env.user(), seconds=2.0)
    mark = plane.audit_mark()
    time.sleep(IDLE_SECONDS)
    idle = plane.requests_since(mark, user=env.user(), verbs=None)
    idle_writes = [e for e in idle if e["verb"] in plane_module.WRITE_VERBS]
    idle_reads = len(idle) - len(idle_writes)
    rss_idle = rss_kib(operator) / 1024

    plane.kubectl("create", "namespace", NOISE_NAMESPACE)
    started = time.monotonic()
    create_config_maps(plane, NOISE_NAMESPACE, NOISE_CONFIG_MAPS)
    noise_seconds = time.monotonic() - started
    mark = plane.audit_mark()
    time.sleep(IDLE_SECONDS)
    noisy = plane.requests_since(mark, user=env.user(), verbs=None)
    rss_noise = rss_kib(operator) / 1024
    operator.stop()

    print()
    print("| what | median | min - max | target |")
    print("| --- | --- | --- | --- |")
    print(median_row("create -> Ready, installers started as their pods appear", [c["ready"] for c in cycles],
                     target="<= 1 s"))
    print(median_row("  first object applied", [c["first_apply"] for c in cycles]))
    print(median_row("  last object applied", [c["last_apply"] for c in cycles]))
    print(median_row("  both installer pods bound to their nodes", [c["bound"] for c in cycles]))
    print(median_row("  both installer processes started (the kubelet's part done)", [c["spawned"] for c in cycles]))
    print(median_row("  both node reports written", [c["reports"] for c in cycles]))
    print(median_row("  Ready seen after the last report", [c["ready"] - c["reports"] for c in cycles]))
    print(median_row("deleted ConfigMap repaired", deleted, target="<= 1 s"))
    print(median_row("edited agent DaemonSet repaired", edited, target="<= 1 s"))
    print(median_row(f"writes on create ({objects} objects; Events apart)", [c["writes"] for c in cycles], unit="n",
                     target=f"<= {objects + 2}"))
    print(median_row("Events on create", [c["events"] for c in cycles], unit="n"))
    print(median_row("create -> Ready, installPolicy: false (the operator alone)", [c["ready"] for c in alone]))
    print(median_row(f"writes on create, installPolicy: false ({alone[0]['objects']} objects)",
                     [c["writes"] for c in alone], unit="n", target=f"<= {alone[0]['objects'] + 2}"))
    print(f"| writes while idle ({IDLE_SECONDS:.0f} s, resync every {IDLE_RESYNC} s) | {len(idle_writes)} "
          f"({idle_reads} reads) | | 0 |")
    print(f"| operator RSS idle | {rss_idle:.1f} MiB | | <= 80 MiB |")
    print(f"| operator RSS with {NOISE_CONFIG_MAPS:,} unrelated ConfigMaps (made in {noise_seconds:.0f} s) | "
          f"{rss_noise:.1f} MiB ({rss_noise - rss_idle:+.1f}); {len(noisy)} requests in {IDLE_SECONDS:.0f} s "
          f"(idle: {len(idle)}) | | flat |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
