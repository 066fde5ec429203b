"""Scale on the real control plane: 10,000 unrelated ConfigMaps and 200 unrelated DaemonSet-owned
pods change neither the operator's memory nor the requests it sends.

kaudit watches its children by a server-side label selector, so the API server never sends it the
noise; its lists are label-selected too. Requests are counted in kube-apiserver's audit log.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from kaudit_harness import (Api, KauditInstall, create_daemonsets, create_config_maps, dump, install, request_shape,
                        rss_kib, wait_settled)
from plane import wait_for

RELEASE, NAMESPACE, AGENT_NAMESPACE = "kaudit-scale", "scale-system", "scale-agent"
NOISE_NAMESPACE = "scale-noise"
CONFIG_MAPS = 10_000
DAEMON_SETS = 100  # on both control-plane nodes: 200 pods, beside kaudit's agent pods
RSS_TOLERANCE_KIB = 5 * 1024
IDLE_SECONDS = 3.0


@pytest.fixture(scope="module")
def kaudit(control_plane):
    env = install(control_plane, RELEASE, NAMESPACE, AGENT_NAMESPACE)
    try:
        yield env
    finally:
        env.cleanup()
        control_plane.kubectl("delete", "namespace", NOISE_NAMESPACE, "--wait=false", check=False)
        control_plane.kubectl("delete", "daemonsets", "-n", AGENT_NAMESPACE, "-l", "scale-noise", "--wait=false",
                              check=False)


def count(api: Api, path: str, *, page: bool = False) -> int:
    """How many objects a list returns; with ``page``, from a one-item page (kubectl takes seconds
    for 10,000; the API server gives remainingItemCount only to a list without a selector)."""
    status, listed = api.request("GET", path + ("?limit=1" if page else ""))
    assert status == 200, listed
    return len(listed["items"]) + int(listed["metadata"].get("remainingItemCount") or 0)


def repair_and_idle(env: KauditInstall) -> tuple[Counter, int]:
    """The requests of one drift repair (a deleted child), by shape, and the number of requests
    over an idle interval after it."""
    plane, user = env.plane, env.user()
    name = f"{RELEASE}-agent-config"
    mark = plane.audit_mark()
    plane.kubectl("delete", "configmap", "-n", AGENT_NAMESPACE, name)
    wait_for(lambda: plane.get_or_none("configmap", "-n", AGENT_NAMESPACE, name), 30, "the ConfigMap back")
    wait_settled(plane, user)
    repair = Counter(request_shape(e) for e in plane.requests_since(mark, user=user, verbs=None))
    idle_mark = plane.audit_mark()
    time.sleep(IDLE_SECONDS)
    return repair, len(plane.requests_since(idle_mark, user=user, verbs=None))


def test_unrelated_objects_change_neither_memory_nor_requests(kaudit):
    plane, user = kaudit.plane, kaudit.user()
    operator = kaudit.start_operator("--standalone")
    kaudit.create(kaudit.managed("scale", apiServer={"installPolicy": False}))
    kaudit.wait_ready("scale")
    wait_settled(plane, user)
    repair_and_idle(kaudit)  # warm-up: the first repair allocates what later ones reuse
    before_rss = rss_kib(operator)
    before_repair, before_idle = repair_and_idle(kaudit)

    mark = plane.audit_mark()
    plane.kubectl("create", "namespace", NOISE_NAMESPACE)
    # The DaemonSets first: their pods are made by the controllers while the ConfigMaps go in.
    create_daemonsets(plane, AGENT_NAMESPACE, DAEMON_SETS, selector_label="scale-noise")
    create_config_maps(plane, NOISE_NAMESPACE, CONFIG_MAPS)
    api = Api(plane)
    wait_for(lambda: count(api, f"/api/v1/namespaces/{AGENT_NAMESPACE}/pods?labelSelector=scale-noise")
             == DAEMON_SETS * len(plane.control_plane_nodes), 180, "the DaemonSets' pods", interval=1)
    assert count(api, f"/api/v1/namespaces/{NOISE_NAMESPACE}/configmaps", page=True) >= CONFIG_MAPS
    api.close()
    wait_settled(plane, user)
    during = plane.requests_since(mark, user=user, verbs=None)
    assert during == [], f"the operator reacted to unrelated objects:\n{dump(during)}"

    after_repair, after_idle = repair_and_idle(kaudit)
    after_rss = rss_kib(operator)
    assert after_repair == before_repair, f"before: {before_repair}\nafter: {after_repair}"
    assert after_idle == before_idle == 0
    assert abs(after_rss - before_rss) <= RSS_TOLERANCE_KIB, (before_rss, after_rss)
