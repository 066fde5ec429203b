"""Replicas do not fight: kaudit's own background work stops while kopf pauses this replica."""

from __future__ import annotations

import asyncio
import datetime
import logging

import kmock
import kopf
import pytest

from kaudit.reconcile.peering import PeeringIdentity, outranked
from kaudit.reconcile.preflight import peering_problem
from kaudit.reconcile.runtime import close, is_active
from operator_support import (ApplyEmulator, collection, is_ready, live_object, prepare, running_operator,
                              runtime_for, uncovered_requests, until, writes)

pytestmark = pytest.mark.kmock(cls=ApplyEmulator)

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
ME = PeeringIdentity("kaudit", priority=10, identity="pod-a/1/aaaaaa")
PEERINGS = "kopf.dev/v1/clusterkopfpeerings"


def peer(priority: int, seconds_ago: int, lifetime: int = 60) -> dict:
    # The entry kopf's keepalive writes (kopf peering: priority, lifetime, lastseen).
    lastseen = (NOW - datetime.timedelta(seconds=seconds_ago)).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": lastseen}


@pytest.mark.parametrize("others, expected", [
    ({}, False),                                     # alone
    ({ME.identity: peer(10, 0)}, False),             # only its own entry
    ({"pod-b": peer(5, 0)}, False),                  # a lower peer waits for this one
    ({"pod-b": peer(20, 0)}, True),                  # a live higher peer works instead
    ({"pod-b": peer(20, 61)}, False),                # ...unless its lifetime ran out
    ({"pod-b": peer(10, 0)}, True),                  # same priority: kopf pauses both
    ({"pod-b": {"priority": 20}}, False),            # no lastseen: not a live peer
])
def test_outranked_follows_kopfs_rule(others, expected):
    assert outranked({"status": others}, ME, NOW) is expected


def test_no_peering_object_means_no_rival():
    assert outranked(None, ME, NOW) is False


def peering_object(peers: dict) -> dict:
    return {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
            "metadata": {"name": "kaudit", "uid": "uid-peering", "resourceVersion": "1"}, "status": peers}


def writes_to(server: kmock.KubernetesEmulator, path: str, since: int) -> list:
    """The operator's writes (PATCH: server-side apply) to ``path``."""
    return [r for r in writes(server, since) if r.url.path == path and r.method == kmock.method.PATCH]


async def test_a_paused_replica_leaves_drift_and_resync_to_the_active_one(kmock):
    prepare(kmock)
    kmock.resources[PEERINGS] = kmock.ResourceInfo(kind="ClusterKopfPeering", singular="clusterkopfpeering",
                                                   namespaced=False, verbs={"get", "list", "watch", "patch"})
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    rival = {"priority": 99, "lifetime": 3600, "lastseen": now}
    kmock.objects[PEERINGS, None, "kaudit"] = peering_object({})
    runtime = runtime_for(kmock, resync_interval=0.05, peering=ME)
    path = "/apis/rbac.authorization.k8s.io/v1/namespaces/kaudit-system/roles/kaudit-cluster-policy-installer"
    async with running_operator(kmock, runtime):  # kopf itself runs standalone here
        response = await kmock.post("/apis/kaudit.dev/v1alpha1/auditcollections", json=collection())
        assert response.status == 200
        await until(lambda: is_ready(kmock))
        # A higher-priority replica appears: kopf would pause this one.
        kmock.objects[PEERINGS, None, "kaudit"] = peering_object({"pod-b": rival})
        await asyncio.sleep(0.2)  # a resync that looked before the rival came finishes (as kopf's handlers do)
        start = len(list(kmock))
        await kmock.delete(path)
        await asyncio.sleep(0.4)  # the namespace watch's event and several resyncs
        assert writes_to(kmock, path, start) == [], dict(runtime.state.metrics.reconciles)
        assert live_object(kmock, "roles", "kaudit-system", "kaudit-cluster-policy-installer") is None
        # The rival is gone: this replica works again, and the resync repairs the Role.
        kmock.objects[PEERINGS, None, "kaudit"] = peering_object({})
        await until(lambda: writes_to(kmock, path, start) != [])
    # Reading the peering object is a "get" of kaudit's own ClusterKopfPeering, which the RBAC grants.
    assert uncovered_requests(kmock) == []



async def test_preflight_names_the_missing_peering_object_and_the_way_out(kmock):
    prepare(kmock)
    kmock.resources[PEERINGS] = kmock.ResourceInfo(kind="ClusterKopfPeering", singular="clusterkopfpeering",
                                                   namespaced=False, verbs={"get", "list", "watch", "patch"})
    info = kopf.ConnectionInfo(server=str(kmock.url).rstrip("/"))
    problem = await peering_problem(info, "kaudit")
    assert problem is not None and '"kaudit" not found' in problem and "--standalone" in problem
    kmock.objects[PEERINGS, None, "kaudit"] = peering_object({})
    assert await peering_problem(info, "kaudit") is None


async def test_a_deleted_peering_object_pauses_kaudits_own_work_with_one_warning(kmock, caplog):
    # kopf pauses every watch while the object is missing: kaudit's resync must not act either,
    # and the pause must be visible at WARNING, once, not only in kopf's DEBUG log.
    prepare(kmock)
    kmock.resources[PEERINGS] = kmock.ResourceInfo(kind="ClusterKopfPeering", singular="clusterkopfpeering",
                                                   namespaced=False, verbs={"get", "list", "watch", "patch"})
    runtime = runtime_for(kmock, peering=ME)
    try:
        with caplog.at_level(logging.WARNING, logger="kaudit"):
            assert await is_active(runtime) is False
            assert await is_active(runtime) is False
        paused = [rec for rec in caplog.records if "paused" in rec.getMessage()]
        assert len(paused) == 1 and "--standalone" in paused[0].getMessage()
        kmock.objects[PEERINGS, None, "kaudit"] = peering_object({})
        assert await is_active(runtime) is True
    finally:
        await close(runtime)
