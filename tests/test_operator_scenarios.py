"""The real operator (kopf handlers + the real renderer) against kmock: create, update, drift,
delete, refusals, conflict, faults, restart. kmock lacks server-side apply and garbage collection:
where the outcome depends on them, the exact requests are asserted."""

from __future__ import annotations

import asyncio
import copy
import json

import kmock
import pytest

from kaudit.render import render
from operator_support import (APPLY, COLLECTIONS, ApplyEmulator, body_of, collection, condition, fake_installer,
                              is_ready, live_object, load_yaml, prepare, running_operator, runtime_for,
                              status_of, uncovered_requests, until, writes)

pytestmark = pytest.mark.kmock(cls=ApplyEmulator)

NAMESPACE = "kaudit-system"
IMAGE = "kaudit/kaudit:test"
CREATE_URL = "/apis/kaudit.dev/v1alpha1/auditcollections"
DS_PATH = "/apis/apps/v1/namespaces/datadog/daemonsets/datadog-agent"


@pytest.fixture
def server(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    prepare(kmock)
    yield kmock
    # Every request the operator sent in the scenario is one its RBAC table allows, in that scope
    # (cluster-wide, its own namespace, an agent namespace, kube-system).
    assert uncovered_requests(kmock) == []


def applies(server, since: int = 0) -> list:
    return [r for r in writes(server, since)
            if r.method == kmock.method.PATCH and r.headers.get("Content-Type", "").startswith(APPLY)]


def child_writes(server, since: int = 0) -> list:
    """The operator's writes to children (the fake installer's node reports are not the operator's)."""
    return [r for r in writes(server, since) if "auditcollections" not in r.url.path and "/leases" not in r.url.path]


def rendered_objects(spec: dict, existing=()) -> tuple[dict, ...]:
    return render(collection(spec=spec), existing=existing, namespace=NAMESPACE, image=IMAGE).objects


def user_daemon_set() -> dict:
    ds = load_yaml("examples/existing/datadog-agent-daemonset.yaml")
    ds["metadata"].update(uid="uid-ds", resourceVersion="7")
    return ds


DAEMONSET_SPEC = {"agent": {"mode": "DaemonSet", "namespace": "datadog",
                            "daemonSet": {"name": "datadog-agent", "container": "agent"}}}


def handled(memo, server, name: str = "cluster") -> bool:
    """kopf finished its handling cycle (it records the handled spec last, in the operator's memory)
    and no reconcile is under way (one a child's event started meanwhile)."""
    reconciler = memo.state.reconciler
    return (server.objects[COLLECTIONS, None, name]["metadata"]["uid"] in memo.state.diffbase
            and (reconciler is None or reconciler.idle))


async def create(server, body: dict) -> None:
    response = await server.post(CREATE_URL, json=body)
    assert response.status == 200, await response.text()


async def test_create_applies_each_object_once_then_one_status_patch(server):
    async with running_operator(server):
        start = len(list(server))
        await create(server, collection())
        await until(lambda: is_ready(server))
        await until(lambda: len(writes(server, start)) >= len(rendered_objects(collection()["spec"])) + 3)

    expected = rendered_objects(collection()["spec"])
    sent = applies(server, start)
    # One server-side apply per rendered object, as field manager kaudit; what others refer to (a
    # pod's ServiceAccount and ConfigMap, a RoleBinding's Role) in a first round, the rest after it.
    plurals = {"ConfigMap": "configmaps", "ServiceAccount": "serviceaccounts", "Role": "roles",
               "RoleBinding": "rolebindings", "DaemonSet": "daemonsets"}
    keys = [tuple(r.url.path.split("/")[-2:]) for r in sent]
    wanted = [(plurals[o["kind"]], o["metadata"]["name"]) for o in expected]
    referenced = {key for key in wanted if key[0] in ("configmaps", "serviceaccounts", "roles")}
    assert sorted(keys) == sorted(wanted)
    assert set(keys[:len(referenced)]) == referenced
    for request in sent:
        assert request.params == {"fieldManager": "kaudit", "force": "true"}
        body = body_of(request)
        assert body["metadata"]["ownerReferences"] == [{
            "apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "name": "cluster",
            "uid": "uid-cluster", "controller": True, "blockOwnerDeletion": True}]
        assert body["metadata"]["labels"]["kaudit.dev/collection"] == "cluster"
    # Besides the applies: the test's POST and the status patches: the policy's approval before the
    # ConfigMap, then the status, twice when the installer's node report arrives after the first
    # one (Installing → Installed). kopf writes no bookkeeping of its own (reconcile/bookkeeping.py).
    others = [(str(r.method), r.url.path) for r in writes(server, start)
              if r not in sent and "/leases" not in r.url.path]
    assert others[0] == ("method.POST", CREATE_URL)
    statuses = others.count(("method.PATCH", CREATE_URL + "/cluster/status"))
    assert 2 <= statuses <= 3 and len(others) == 1 + statuses, others
    # Managed mode changes no user object: no finalizer.
    assert "finalizers" not in server.objects[COLLECTIONS, None, "cluster"]["metadata"]
    status = status_of(server)
    assert status["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True", "PolicyValid": "True", "PolicyInstalled": "True", "AgentConfigured": "True"}
    # The fake installer reported from cp-1; there is no kube-apiserver mirror pod in kmock.
    assert status["nodes"] == [{
        "name": "cp-1", "installedHash": status["policy"]["fullHash"],
        "installedAt": status["nodes"][0]["installedAt"], "restartRequired": "unknown",
        "message": "no kube-apiserver mirror pod on this node: restart state unknown"}]
    assert status["apiServerFlags"][0] == "--audit-policy-file=/etc/kubernetes/audit-policies/policy.yaml"
    assert status["policy"]["hash"] == status["policy"]["fullHash"][:12]
    assert status["agent"] == {"controlPlaneNodes": 1, "desired": 1, "ready": 0,
                               "message": "0/1 agent pods ready on control-plane nodes."}


async def test_restart_with_nothing_changed_writes_nothing(server):
    async with running_operator(server):
        await create(server, collection())
        await until(lambda: is_ready(server))
    start = len(list(server))
    runtime = runtime_for(server)
    async with running_operator(server, runtime):
        await until(lambda: runtime.state.metrics.reconciles.get(("resume", "ready"), 0) >= 1)
    assert writes(server, start, events=True) == []


async def test_update_reapplies_only_what_changed_and_bumps_observed_generation(server):
    async with running_operator(server):
        await create(server, collection())
        await until(lambda: is_ready(server))
        start = len(list(server))
        await server.patch(CREATE_URL + "/cluster", json={
            "metadata": {"generation": 2}, "spec": {"policy": {"profile": "WriteRequestBodies"}}})
        await until(lambda: status_of(server).get("observedGeneration") == 2)
    paths = [r.url.path for r in applies(server, start)]
    # Only the policy ConfigMap carries the policy; the agent side does not change.
    assert paths == ["/api/v1/namespaces/kaudit-system/configmaps/kaudit-cluster-policy"]
    assert status_of(server)["policy"]["profile"] == "WriteRequestBodies"
    assert all(c["observedGeneration"] == 2 for c in status_of(server)["conditions"])


async def test_deleted_child_is_restored_from_the_watch(server):
    async with running_operator(server):
        await create(server, collection())
        await until(lambda: is_ready(server))
        path = "/api/v1/namespaces/datadog/configmaps/kaudit-cluster-agent-config"
        original = copy.deepcopy(dict(server.objects["v1/configmaps", "datadog", "kaudit-cluster-agent-config"]))
        start = len(list(server))
        await server.delete(path)
        await until(lambda: any(r.url.path == path for r in applies(server, start)))
    restored = server.objects["v1/configmaps", "datadog", "kaudit-cluster-agent-config"]
    assert restored["data"] == original["data"]
    # Only the deleted object is written back.
    assert [r.url.path for r in applies(server, start)] == [path]


@pytest.mark.parametrize("plural, name", [("roles", "kaudit-cluster-policy-installer"),
                                          ("rolebindings", "kaudit-cluster-policy-installer")])
async def test_deleted_installer_rbac_is_restored_from_the_namespace_watch(server, plural, name):
    # The installer's Role and RoleBinding live only in the operator namespace, outside kopf's
    # cluster-wide watches: a watch in that namespace brings the deletion in, long before the
    # resync (an hour here, so only the watch can explain the repair).
    async with running_operator(server, runtime_for(server, resync_interval=3600)) as memo:
        await create(server, collection())
        await until(lambda: is_ready(server) and handled(memo, server))
        path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/kaudit-system/{plural}/{name}"
        assert live_object(server, plural, "kaudit-system", name) is not None
        start = len(list(server))
        await server.delete(path)
        await until(lambda: any(r.url.path == path for r in applies(server, start)))
        # Its own re-apply's echo does not start another round.
        await asyncio.sleep(0.2)
    assert [r.url.path for r in applies(server, start)] == [path]
    watches = {r.url.path for r in list(server) if r.params.get("watch") and "rbac.authorization" in r.url.path}
    assert watches == {"/apis/rbac.authorization.k8s.io/v1/namespaces/kaudit-system/roles",
                       "/apis/rbac.authorization.k8s.io/v1/namespaces/kaudit-system/rolebindings"}


async def test_edited_child_is_put_back(server):
    async with running_operator(server):
        await create(server, collection())
        await until(lambda: is_ready(server))
        path = "/api/v1/namespaces/kaudit-system/configmaps/kaudit-cluster-policy"
        start = len(list(server))
        await server.patch(path, json={"data": {"policy.yaml": "rules: []\n"}})
        await until(lambda: any(r.url.path == path for r in applies(server, start)))
    assert server.objects["v1/configmaps", "kaudit-system", "kaudit-cluster-policy"]["data"]["policy.yaml"] != "rules: []\n"


async def test_invalid_policy_sets_policy_valid_false_and_writes_nothing(server):
    bad = {"agent": {"mode": "Managed"}, "policy": {"rules": [{"level": "Loud"}]}}
    async with running_operator(server):
        start = len(list(server))
        await create(server, collection(spec=bad))
        await until(lambda: condition(server, "PolicyValid").get("status") == "False")
    policy_valid = condition(server, "PolicyValid")
    assert policy_valid["reason"] == "InvalidPolicy"
    assert policy_valid["message"].startswith("spec.policy.rules[0].level")
    assert condition(server, "Ready")["status"] == "False"
    assert child_writes(server, start) == []


async def test_invalid_update_keeps_the_last_good_policy(server):
    async with running_operator(server):
        await create(server, collection())
        await until(lambda: is_ready(server))
        good = status_of(server)["policy"]
        start = len(list(server))
        await server.patch(CREATE_URL + "/cluster", json={
            "metadata": {"generation": 2}, "spec": {"policy": {"rules": [{"level": "Loud"}]}}})
        await until(lambda: status_of(server).get("observedGeneration") == 2)
    assert child_writes(server, start) == []
    assert status_of(server)["policy"] == good
    assert condition(server, "PolicyValid")["reason"] == "InvalidPolicy"


async def test_every_refused_generation_gets_a_warning_event(server):
    # A second, different refusal keeps Ready=False/InvalidPolicy, yet the user still needs to hear
    # why this generation was refused.
    async with running_operator(server):
        start = len(list(server))
        await create(server, collection(spec={"policy": {"rules": [{"level": "Loud"}]}}))
        await until(lambda: condition(server, "PolicyValid").get("status") == "False")
        await server.patch(CREATE_URL + "/cluster", json={
            "metadata": {"generation": 2}, "spec": {"policy": {"rules": [{"level": "None", "omitStages": ["Nope"]}]}}})
        await until(lambda: status_of(server).get("observedGeneration") == 2)
        await until(lambda: len([r for r in writes(server, start, events=True) if r.url.path.endswith("/events")]) >= 2)
    events = [body_of(r) for r in writes(server, start, events=True) if r.url.path.endswith("/events")]
    refusals = [e for e in events if e["type"] == "Warning" and e["reason"] == "InvalidPolicy"]
    assert len(refusals) == 2
    assert refusals[0]["message"] != refusals[1]["message"]
    assert refusals[0]["message"].startswith("spec.policy.rules[0].level")


async def test_second_collection_gets_conflict_and_changes_nothing(server):
    async with running_operator(server):
        await create(server, collection())
        await until(lambda: is_ready(server))
        start = len(list(server))
        await create(server, collection("second", created="2026-02-01T00:00:00Z"))
        await until(lambda: condition(server, "Ready", "second").get("reason") == "Conflict")
    assert "'cluster' is already active" in condition(server, "Ready", "second")["message"]
    assert child_writes(server, start) == []


async def test_daemonset_managed_by_the_datadog_operator_is_refused(server):
    ds = user_daemon_set()
    ds["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "datadog-operator"
    server.objects["apps/v1/daemonsets", "datadog", "datadog-agent"] = ds
    async with running_operator(server):
        start = len(list(server))
        await create(server, collection(spec=DAEMONSET_SPEC))
        await until(lambda: condition(server, "AgentConfigured").get("status") == "False")
    assert condition(server, "AgentConfigured")["reason"] == "ManagedByDatadogOperator"
    assert "DatadogAgent" in condition(server, "AgentConfigured")["message"]
    assert child_writes(server, start) == []
    events = [body_of(r) for r in writes(server, start, events=True) if r.url.path.endswith("/events")]
    assert any(e["type"] == "Warning" and e["reason"] == "ManagedByDatadogOperator" for e in events)


async def test_daemonset_mode_patch_and_release_send_exactly_kaudits_fields(server):
    server.objects["apps/v1/daemonsets", "datadog", "datadog-agent"] = user_daemon_set()
    async with running_operator(server) as memo:
        await create(server, collection(spec=DAEMONSET_SPEC))
        await until(lambda: is_ready(server))
        ds_applies = [r for r in applies(server) if r.url.path == DS_PATH]
        assert len(ds_applies) == 1
        request = ds_applies[0]
        assert request.headers["Content-Type"] == "application/apply-patch+yaml"
        assert request.params == {"fieldManager": "kaudit", "force": "true"}
        sent = body_of(request)
        expected = render(collection(spec=DAEMONSET_SPEC), existing=[user_daemon_set()],
                          namespace=NAMESPACE, image=IMAGE).patches[0]
        annotations = sent["metadata"].pop("annotations")
        assert sent == expected  # the renderer's body, nothing more, no owner reference
        # tolerations are an atomic list: kaudit records which items it added to the user's list.
        added = json.loads(annotations["kaudit.dev/added-items"])[".spec.template.spec.tolerations"]
        assert {t["key"] for t in added} == {"node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"}
        assert len(annotations["kaudit.dev/applied-hash"]) == 64
        assert json.loads(annotations["kaudit.dev/replaced-values"]) == [
            [["spec", "template", "spec", "containers", "agent", "env", "DD_LOGS_ENABLED", "value"], "false"]]
        assert server.objects[COLLECTIONS, None, "cluster"]["metadata"]["finalizers"] == ["kaudit.dev/release"]

        await until(lambda: handled(memo, server))
        start = len(list(server))
        await server.delete(CREATE_URL + "/cluster")
        await until(lambda: server.objects[COLLECTIONS, None, "cluster"].history[-1] is None)
    released = [r for r in writes(server, start) if r.url.path == DS_PATH]
    # First the user's own tolerations go back (guarded by resourceVersion), then an empty apply
    # without force: kaudit then manages no field, and the API server drops what only it set.
    # The chart's DD_LOGS_ENABLED=false, which kaudit turned on, goes back by a JSON patch that
    # tests the names at the indices it writes.
    assert [r.headers["Content-Type"] for r in released] == [
        "application/merge-patch+json", "application/json-patch+json", APPLY]
    agent = user_daemon_set()["spec"]["template"]["spec"]["containers"][0]
    index = [e["name"] for e in agent["env"]].index("DD_LOGS_ENABLED")
    assert body_of(released[1])[-3:] == [
        {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "agent"},
        {"op": "test", "path": f"/spec/template/spec/containers/0/env/{index}/name", "value": "DD_LOGS_ENABLED"},
        {"op": "replace", "path": f"/spec/template/spec/containers/0/env/{index}/value", "value": "false"}]
    released = [released[0], released[2]]
    restore = body_of(released[0])
    # The chart's default values set no tolerations: the list goes back to none.
    assert restore["spec"] == {"template": {"spec": {"tolerations": None}}}
    assert restore["metadata"]["resourceVersion"]
    assert body_of(released[1]) == {"apiVersion": "apps/v1", "kind": "DaemonSet",
                                    "metadata": {"name": "datadog-agent", "namespace": "datadog"}}
    assert released[1].params == {"fieldManager": "kaudit"}


async def test_release_restore_meeting_a_concurrent_write_is_computed_again_from_a_fresh_read(server):
    server.objects["apps/v1/daemonsets", "datadog", "datadog-agent"] = user_daemon_set()
    conflict = kmock.KubernetesError(status=409, reason="Conflict", message="the object has been modified")
    async with running_operator(server) as memo:
        await create(server, collection(spec=DAEMONSET_SPEC))
        await until(lambda: is_ready(server))
        await until(lambda: handled(memo, server))
        # Another writer changed the DaemonSet after kaudit's last read: the guarded restore meets a 409.
        patches_so_far = len(list(server[kmock.method.PATCH, kmock.path(DS_PATH)]))  # slices count from the start
        refused = server[kmock.method.PATCH, kmock.path(DS_PATH)][patches_so_far:patches_so_far + 1] << conflict
        start = len(list(server))
        await server.delete(CREATE_URL + "/cluster")
        await until(lambda: server.objects[COLLECTIONS, None, "cluster"].history[-1] is None)
    assert len(refused) == 1
    on_ds = [(r.method, r.headers.get("Content-Type")) for r in list(server)[start:] if r.url.path == DS_PATH]
    merge = (kmock.method.PATCH, "application/merge-patch+json")
    # The refused restore is followed by a fresh read, never resent as it was (it could only meet
    # the same 409 again); the hand-back then finishes with the empty apply.
    assert on_ds[:2] == [merge, (kmock.method.GET, None)]
    assert all(pair != (merge, merge) for pair in zip(on_ds, on_ds[1:]))
    assert on_ds[-1] == (kmock.method.PATCH, APPLY)
    restored = server.objects["apps/v1/daemonsets", "datadog", "datadog-agent"]
    assert restored["spec"]["template"]["spec"].get("tolerations") == \
        user_daemon_set()["spec"]["template"]["spec"].get("tolerations")


async def test_transient_errors_are_retried_and_the_result_is_unchanged(server):
    error = kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="etcd leader changed")
    throttled = kmock.KubernetesError(status=429, reason="TooManyRequests", message="slow down")
    conflict = kmock.KubernetesError(status=409, reason="Conflict", message="the object has been modified")
    faults = server[kmock.method.PATCH, kmock.namespace("datadog")][:3] << error
    server[kmock.method.GET, kmock.resource("v1/nodes")][:1] << throttled
    server[kmock.method.PATCH, kmock.subresource("status")][:1] << conflict
    async with running_operator(server):
        await create(server, collection())
        await until(lambda: is_ready(server))
    assert len(faults) == 3
    expected = rendered_objects(collection()["spec"])
    for obj in expected:
        meta = obj["metadata"]
        live = server.objects[_resource_key(obj), meta.get("namespace"), meta["name"]]
        assert {k: v for k, v in live.items() if k not in ("metadata", "status")} == \
            {k: v for k, v in obj.items() if k != "metadata"}


def _resource_key(obj: dict) -> str:
    plural = {"ConfigMap": "configmaps", "ServiceAccount": "serviceaccounts", "DaemonSet": "daemonsets",
              "Role": "roles", "RoleBinding": "rolebindings"}[obj["kind"]]
    return f"{obj['apiVersion']}/{plural}"


DDA_PATH = "/apis/datadoghq.com/v2alpha1/namespaces/datadog/datadogagents/datadog"
DATADOGAGENT_SPEC = {"agent": {"mode": "DatadogAgent", "namespace": "datadog", "datadogAgent": {"name": "datadog"}}}


def user_datadog_agent() -> dict:
    dda = load_yaml("examples/existing/datadogagent.yaml")
    dda["metadata"].update(uid="uid-dda", resourceVersion="3")
    return dda


async def test_datadogagent_mode_patches_the_resource_and_gives_it_back(server):
    server.objects["datadoghq.com/v2alpha1/datadogagents", "datadog", "datadog"] = user_datadog_agent()
    async with running_operator(server) as memo:
        await create(server, collection(spec=DATADOGAGENT_SPEC))
        await until(lambda: is_ready(server) and handled(memo, server))
        [request] = [r for r in applies(server) if r.url.path == DDA_PATH]
        assert request.params == {"fieldManager": "kaudit", "force": "true"}
        sent = body_of(request)
        annotations = sent["metadata"].pop("annotations")
        expected = render(collection(spec=DATADOGAGENT_SPEC), existing=[user_datadog_agent()],
                          namespace=NAMESPACE, image=IMAGE).patches[0]
        assert sent == expected
        added = json.loads(annotations["kaudit.dev/added-items"])
        assert list(added) == [".spec.override.nodeAgent.tolerations"]
        assert condition(server, "AgentConfigured")["reason"] == "Applied"

        start = len(list(server))
        await server.delete(CREATE_URL + "/cluster")
        await until(lambda: server.objects[COLLECTIONS, None, "cluster"].history[-1] is None)
    released = [r for r in writes(server, start) if r.url.path == DDA_PATH]
    assert [r.headers["Content-Type"] for r in released] == ["application/merge-patch+json", APPLY]
    user_tolerations = user_datadog_agent()["spec"]["override"]["nodeAgent"]["tolerations"]
    assert body_of(released[0])["spec"] == {"override": {"nodeAgent": {"tolerations": user_tolerations}}}
    assert body_of(released[1]) == {"apiVersion": "datadoghq.com/v2alpha1", "kind": "DatadogAgent",
                                    "metadata": {"name": "datadog", "namespace": "datadog"}}


async def test_idle_resyncs_write_nothing(server):
    async with running_operator(server) as memo:
        await create(server, collection())
        await until(lambda: is_ready(server) and handled(memo, server))
    runtime = runtime_for(server, resync_interval=0.02)
    start = len(list(server))
    async with running_operator(server, runtime):
        await until(lambda: runtime.state.metrics.reconciles.get(("resync", "ready"), 0) >= 3)
    assert writes(server, start, events=True) == []


async def test_exhausted_retries_fail_the_handler_and_kopf_retries_it(server):
    unavailable = kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="down")
    # More failures than the client's four attempts: the first handler run gives up. The agent's
    # ConfigMap and ServiceAccount go out together, so both use up their attempts.
    faults = server[kmock.method.PATCH, kmock.namespace("datadog")][:8] << unavailable
    runtime = runtime_for(server, transient_delay=0.01)
    async with running_operator(server, runtime):
        await create(server, collection())
        await until(lambda: is_ready(server))
    assert len(faults) == 8
    assert runtime.state.metrics.reconciles[("create", "error")] == 1
    assert runtime.state.metrics.reconciles[("create", "ready")] == 1


async def test_agent_that_cannot_reach_control_plane_nodes_is_reported(server):
    del server.objects["v1/nodes", None, "cp-1"]
    async with running_operator(server):
        await create(server, collection())
        await until(lambda: condition(server, "AgentConfigured").get("status") == "False")
    agent = condition(server, "AgentConfigured")
    assert agent["reason"] == "NotSchedulable"
    assert "No control-plane node is visible" in agent["message"]
    assert any(w.startswith("spec.agent: No control-plane node") for w in status_of(server)["warnings"])
    assert status_of(server)["agent"]["controlPlaneNodes"] == 0


async def test_every_change_is_an_event(server):
    async with running_operator(server) as memo:
        start = len(list(server))
        await create(server, collection())
        await until(lambda: is_ready(server) and handled(memo, server))
    events = [body_of(r) for r in writes(server, start, events=True) if r.url.path.endswith("/events")]
    applied = [e["message"] for e in events if e["reason"] == "Applied"]
    assert len(applied) == len(rendered_objects(collection()["spec"]))
    assert all(e["involvedObject"]["uid"] == "uid-cluster" for e in events)
    # The collection is cluster-scoped: the API server takes its Events only in "default".
    event_paths = {r.url.path for r in writes(server, start, events=True) if r.url.path.endswith("/events")}
    assert event_paths == {"/api/v1/namespaces/default/events"}
    assert all(e["metadata"]["namespace"] == "default" and "namespace" not in e["involvedObject"] for e in events)
    # Then Ready: possibly through "Installing" first (the installer's report may come later).
    assert [e["reason"] for e in events if e["reason"] not in ("Applied", "Installing")] == ["Reconciled"]
    assert all(e["type"] == "Normal" for e in events)


async def test_ready_waits_for_the_installer_and_reports_a_required_restart(server):
    # A kube-apiserver mirror pod on cp-1 that started long before any install.
    server.objects["v1/pods", "kube-system", "kube-apiserver-cp-1"] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kube-apiserver-cp-1", "namespace": "kube-system", "uid": "uid-apiserver",
                     "resourceVersion": "1", "labels": {"component": "kube-apiserver"}},
        "spec": {"nodeName": "cp-1"},
        "status": {"containerStatuses": [{"name": "kube-apiserver",
                                          "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}
    # No recheck within the test: only the operator's watch of the Leases can see the report.
    runtime = runtime_for(server, recheck_delay=3600)
    async with running_operator(server, runtime, installer=False):
        await create(server, collection())
        await until(lambda: condition(server, "PolicyInstalled").get("status") == "False")
        assert condition(server, "Ready")["status"] == "False"
        assert condition(server, "PolicyInstalled")["reason"] == "Installing"
        assert status_of(server)["nodes"][0]["message"] == "no report from the policy installer on this node"
        # The installer reports through a Lease, which the operator watches in its own namespace.
        installer = asyncio.create_task(fake_installer(server))
        try:
            await until(lambda: condition(server, "PolicyInstalled").get("reason") == "RestartRequired")
        finally:
            installer.cancel()
    assert condition(server, "Ready")["status"] == "True"  # the file is in place; the restart is the user's step
    assert status_of(server)["nodes"][0]["restartRequired"] is True
    assert "restart it" in condition(server, "PolicyInstalled")["message"]


async def test_a_report_heartbeat_reconciles_nothing_and_a_changed_report_does(server):
    runtime = runtime_for(server, recheck_delay=3600)
    async with running_operator(server, runtime, installer=False):
        await create(server, collection())
        await until(lambda: condition(server, "PolicyInstalled").get("reason") == "NoReports")
        installer = asyncio.create_task(fake_installer(server))
        try:
            await until(lambda: condition(server, "Ready").get("status") == "True")
        finally:
            installer.cancel()
        reports = lambda: sum(n for (trigger, _), n in runtime.state.metrics.reconciles.items() if trigger == "report")
        await until(lambda: reports() == 1)  # the new report's reconcile (counted once it returns)
        before = reports()
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/kaudit-cluster-policy-cp-1"
        # The installer's heartbeat renews only spec.renewTime: no reconcile for it.
        await server.patch(path, json={"spec": {"renewTime": "2030-01-01T00:00:00.000000Z"}})
        await asyncio.sleep(0.3)
        assert reports() == before
        # A node that reports an install error: reconciled at once, PolicyInstalled follows.
        await server.patch(path, json={"metadata": {"annotations": {"kaudit.dev/error": "disk full"}}})
        await until(lambda: condition(server, "PolicyInstalled").get("reason") == "InstallFailed")
        await until(lambda: reports() == before + 1)


async def test_switching_away_from_daemonset_mode_hands_the_daemonset_back(server):
    server.objects["apps/v1/daemonsets", "datadog", "datadog-agent"] = user_daemon_set()
    async with running_operator(server) as memo:
        await create(server, collection(spec=DAEMONSET_SPEC))
        await until(lambda: is_ready(server) and handled(memo, server))
        assert server.objects[COLLECTIONS, None, "cluster"]["metadata"]["finalizers"] == ["kaudit.dev/release"]
        start = len(list(server))
        await server.patch(CREATE_URL + "/cluster", json={"metadata": {"generation": 2},
                                                          "spec": {"agent": {"mode": "None"}}})
        await until(lambda: status_of(server).get("observedGeneration") == 2 and is_ready(server))
        # Nothing left to hand back on delete: kopf drops the finalizer (its when= filter is now false).
        await until(lambda: not server.objects[COLLECTIONS, None, "cluster"]["metadata"].get("finalizers"))
    released = [r for r in writes(server, start) if r.url.path == DS_PATH]
    empty = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "datadog-agent", "namespace": "datadog"}}
    assert released[0].headers["Content-Type"] == "application/merge-patch+json"
    assert released[1].headers["Content-Type"] == "application/json-patch+json"  # DD_LOGS_ENABLED back
    assert body_of(released[2]) == empty and released[2].headers["Content-Type"] == APPLY
    # A real API server drops the kaudit.dev/collection label with that apply (only kaudit set it),
    # so the DaemonSet stops being listed as kaudit's; kmock keeps it, and a later reconcile may
    # repeat the same harmless hand-back.
    assert all(body_of(r) == empty for r in released[3:] if r.headers["Content-Type"] == APPLY)
    # The agent-config ConfigMap kaudit owned is no longer rendered in mode None: deleted.
    deleted = [r.url.path for r in writes(server, start) if str(r.method) == "method.DELETE"]
    assert deleted == ["/api/v1/namespaces/datadog/configmaps/kaudit-cluster-agent-config"]
    assert condition(server, "AgentConfigured")["reason"] == "NoAgent"


async def test_deleting_after_the_user_deleted_their_daemonset_creates_nothing(server):
    server.objects["apps/v1/daemonsets", "datadog", "datadog-agent"] = user_daemon_set()
    async with running_operator(server) as memo:
        await create(server, collection(spec=DAEMONSET_SPEC))
        await until(lambda: is_ready(server) and handled(memo, server))
        await server.delete(DS_PATH)
        start = len(list(server))
        await server.delete(CREATE_URL + "/cluster")
        await until(lambda: server.objects[COLLECTIONS, None, "cluster"].history[-1] is None)
    # The restore finds nothing (404) and no empty apply re-creates a DaemonSet with only a name.
    assert [str(r.method) for r in writes(server, start) if r.url.path == DS_PATH] in (
        [], ["method.PATCH"])
    assert not any(r.headers.get("Content-Type") == APPLY for r in writes(server, start) if r.url.path == DS_PATH)


async def test_the_waiting_collection_takes_over_when_the_active_one_is_deleted(server):
    async with running_operator(server) as memo:
        await create(server, collection())
        await until(lambda: is_ready(server) and handled(memo, server))
        await create(server, collection("second", created="2026-02-01T00:00:00Z"))
        await until(lambda: condition(server, "Ready", "second").get("reason") == "Conflict")
        await server.delete(CREATE_URL + "/cluster")
        await until(lambda: is_ready(server, "second"))
    applied = {r.url.path.rsplit("/", 1)[-1] for r in applies(server)}
    assert "kaudit-second-policy" in applied


async def test_a_refused_apply_is_reported_in_status(server):
    refused = kmock.KubernetesError(status=404, reason="NotFound", message='namespaces "datadog" not found')
    server[kmock.method.PATCH, kmock.namespace("datadog")] << refused
    async with running_operator(server, runtime_for(server)):
        await create(server, collection())
        seen: list[dict] = []  # the status as it was when it said ApplyFailed

        def apply_failed() -> bool:
            seen.append({c["type"]: c for c in status_of(server).get("conditions") or []})
            return seen[-1].get("AgentConfigured", {}).get("reason") == "ApplyFailed"

        await until(apply_failed)
    # Which object comes first depends on kmock, which stores a write even when it answers with an
    # error (so a later reconcile finds it applied); the message names the object and carries the
    # API server's reason.
    message = seen[-1]["AgentConfigured"]["message"]
    assert " datadog/kaudit-cluster-agent" in message
    assert message.endswith(': 404 NotFound: namespaces "datadog" not found')
    assert seen[-1]["Ready"]["status"] == "False"


async def test_children_are_listed_and_watched_by_label_on_the_server(server):
    # Memory must not grow with unrelated ConfigMaps and DaemonSets: every cluster-wide list or
    # watch of a child kind asks the API server to filter by kaudit's label.
    async with running_operator(server):
        await create(server, collection())
        await until(lambda: is_ready(server))
    child_plurals = {"configmaps", "daemonsets", "serviceaccounts", "datadogagents", "roles", "rolebindings"}
    reads = [r for r in server if r.method == kmock.method.GET and r.resource is not None
             and r.resource.plural in child_plurals and not r.name]
    watched = {r.resource.plural for r in reads if str(r.params.get("watch", "")).lower() == "true"}
    assert {"configmaps", "daemonsets", "serviceaccounts"} <= watched
    unfiltered = [(r.resource.plural, r.namespace, dict(r.params)) for r in reads
                  if "kaudit.dev/collection" not in str(r.params.get("labelSelector", ""))]
    assert unfiltered == []


def node_lists(server) -> int:
    return len([r for r in server if r.method == kmock.method.GET and r.resource is not None
                and r.resource.plural == "nodes"])


async def test_nodes_are_read_once_per_reconcile_and_only_when_needed(server):
    # The agent figures and the install state share one list of the control-plane nodes; a
    # policy-only collection that installs nothing needs neither.
    spec = {"agent": {"mode": "None"}, "apiServer": {"installPolicy": False}}
    runtime = runtime_for(server)
    rounds = lambda: sum(runtime.state.metrics.reconciles.values())
    async with running_operator(server, runtime):
        await create(server, collection(spec=spec))
        await until(lambda: is_ready(server))
        await asyncio.sleep(0.3)
        assert node_lists(server) == 0
        before = rounds()
        await server.patch(CREATE_URL + "/cluster", json={"metadata": {"generation": 2},
                                                          "spec": {"agent": {"mode": "Managed"}}})
        await until(lambda: status_of(server).get("observedGeneration") == 2 and is_ready(server))
        await asyncio.sleep(0.3)
    # Some rounds end before the status (nothing to do); none reads the nodes twice.
    assert 1 <= node_lists(server) <= rounds() - before


def _first(requests: list, predicate) -> int:
    return next(i for i, r in enumerate(requests) if predicate(r))


async def test_the_policy_is_approved_before_the_config_map_carries_it(server):
    # The installers install only the hash in status.policy.fullHash: it must be there before any
    # kubelet can hand them the ConfigMap, on creation and on every policy change.
    def approval_then_apply(since: int, expected_hash: str) -> None:
        sent = writes(server, since)
        approval = _first(sent, lambda r: r.url.path == CREATE_URL + "/cluster/status"
                          and body_of(r)["status"].get("policy", {}).get("fullHash") == expected_hash)
        config_map = _first(sent, lambda r: r.url.path.endswith("/configmaps/kaudit-cluster-policy"))
        assert approval < config_map
        assert set(body_of(sent[approval])["status"]) == {"policy"}  # the approval alone, nothing else yet

    async with running_operator(server) as memo:
        start = len(list(server))
        await create(server, collection())
        await until(lambda: is_ready(server) and handled(memo, server))
        first = status_of(server)["policy"]
        assert first["auditKaudit"] is True
        approval_then_apply(start, first["fullHash"])

        start = len(list(server))
        await server.patch(CREATE_URL + "/cluster", json={
            "metadata": {"generation": 2}, "spec": {"policy": {"profile": "WriteRequestBodies"}}})
        await until(lambda: status_of(server).get("observedGeneration") == 2)
        assert status_of(server)["policy"]["fullHash"] != first["fullHash"]
        approval_then_apply(start, status_of(server)["policy"]["fullHash"])


async def test_nothing_is_approved_ahead_when_no_installer_reads_the_approval(server):
    # installPolicy: false renders no installer, so no one reads status.policy before the status
    # that carries it anyway: the create writes the objects and one status, no approval first.
    async with running_operator(server, installer=False) as memo:
        start = len(list(server))
        await create(server, collection(spec={"apiServer": {"installPolicy": False}}))
        await until(lambda: is_ready(server) and handled(memo, server))
    statuses = [body_of(r)["status"] for r in writes(server, start) if r.url.path == CREATE_URL + "/cluster/status"]
    assert len(statuses) == 1 and statuses[0]["policy"] == status_of(server)["policy"]
    assert {c["type"] for c in statuses[0]["conditions"]} >= {"Ready", "PolicyValid", "AgentConfigured"}


async def test_a_refused_policy_is_a_warning_event_and_a_condition_naming_it(server):
    runtime = runtime_for(server, recheck_delay=3600)
    async with running_operator(server, runtime, installer=False):
        await create(server, collection())
        installer = asyncio.create_task(fake_installer(server))
        try:
            await until(lambda: condition(server, "Ready").get("status") == "True")
        finally:
            installer.cancel()
        start = len(list(server))
        approved = status_of(server)["policy"]["fullHash"]
        refused = "f" * 64
        reason = "not the policy AuditCollection cluster approves (status.policy.fullHash " + approved[:12] + ")"
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/kaudit-cluster-policy-cp-1"
        await server.patch(path, json={"metadata": {"annotations": {
            "kaudit.dev/refused-hash": refused, "kaudit.dev/refused-reason": reason,
            "kaudit.dev/refused-at": "2026-12-01T10:00:00.000000Z"}}})
        await until(lambda: condition(server, "PolicyInstalled").get("reason") == "PolicyRefused")
        message = condition(server, "PolicyInstalled")["message"]
        assert message == (f"node cp-1 refused policy ffffffffffff since 2026-12-01T10:00:00Z: {reason}; "
                           f"kept {approved[:12]} installed")
        assert (condition(server, "Ready")["status"], condition(server, "Ready")["reason"]) == ("False", "PolicyRefused")
        assert status_of(server)["nodes"][0]["refusedHash"] == refused
        await until(lambda: any(r.url.path.endswith("/events") and body_of(r)["reason"] == "PolicyRefused"
                                for r in writes(server, start, events=True)))
        [event] = [body_of(r) for r in writes(server, start, events=True)
                   if r.url.path.endswith("/events") and body_of(r)["reason"] == "PolicyRefused"]
        assert event["type"] == "Warning" and event["message"] == message
        # The source is put right (the installer sees the approved policy again): the refusal clears.
        await server.patch(path, json={"metadata": {"annotations": {
            "kaudit.dev/refused-hash": "", "kaudit.dev/refused-reason": "", "kaudit.dev/refused-at": ""}}})
        await until(lambda: condition(server, "Ready").get("status") == "True")


STATUS_PATH = CREATE_URL + "/cluster/status"


def status_patches(server, since: int) -> list[dict]:
    return [body_of(r) for r in writes(server, since) if r.url.path == STATUS_PATH]


async def test_a_create_writes_its_status_twice_the_approval_and_ready(server):
    # The fake installer reports after the first reconcile: its progress status (no report yet)
    # waits within the hold and goes out with Ready, in one patch.
    runtime = runtime_for(server, status_hold=5.0, recheck_delay=3600)
    async with running_operator(server, runtime, installer=False):
        start = len(list(server))
        await create(server, collection())
        await until(lambda: len(status_patches(server, start)) == 1)  # the approval
        await until(lambda: runtime.state.metrics.reconciles.get(("create", "not-ready"), 0) == 1)
        assert len(status_patches(server, start)) == 1, "the progress status waits"
        installer = asyncio.create_task(fake_installer(server))
        try:
            await until(lambda: is_ready(server))
        finally:
            installer.cancel()
    approval, ready = status_patches(server, start)
    assert set(approval["status"]) == {"policy"}
    assert {c["type"]: c["status"] for c in ready["status"]["conditions"]}["Ready"] == "True"
    assert ready["status"]["observedGeneration"] == 1


async def test_a_progress_status_held_back_is_written_when_the_hold_ends(server):
    runtime = runtime_for(server, status_hold=0.5, recheck_delay=3600)
    async with running_operator(server, runtime, installer=False):
        start = len(list(server))
        loop = asyncio.get_running_loop()
        await create(server, collection())
        await until(lambda: len(status_patches(server, start)) == 1)  # the approval
        approved = loop.time()
        await until(lambda: condition(server, "PolicyInstalled").get("reason") == "NoReports")
        assert loop.time() - approved >= 0.45, "written before the hold ended"
    [_, progress] = status_patches(server, start)
    assert {c["type"]: c["reason"] for c in progress["status"]["conditions"]}["Ready"] == "NoReports"


async def test_becoming_ready_and_failures_are_written_at_once(server):
    runtime = runtime_for(server, status_hold=60.0, recheck_delay=3600)
    async with running_operator(server, runtime):
        await create(server, collection())
        await until(lambda: is_ready(server), timeout=5)  # within the 60 s hold: Ready is not held
        generation = server.objects[COLLECTIONS, None, "cluster"]["metadata"]["generation"]
        bad = {"metadata": {"generation": generation + 1},
               "spec": {"policy": {"rules": [{"level": "Metadata", "nonResourceURLs": ["healthz*"]}]}}}
        await server.patch(CREATE_URL + "/cluster", json=bad)
        await until(lambda: condition(server, "PolicyValid").get("reason") == "InvalidPolicy", timeout=5)
