"""Managed mode on the real control plane, end to end, as a user would drive it.

kaudit is installed with ``kubectl apply -k manifests/``; the operator is the real ``kaudit run``
with the Deployment's arguments under its ServiceAccount's token; the policy installer on each
hollow control-plane node is a real ``kaudit install-policy`` process with that node's identity and
the installer ServiceAccount's token. Writes are counted in kube-apiserver's own audit log.

The tests share one collection (``cluster``, created by the module fixture) and run in file order:
drift and updates first, then the refusals, the quiet periods, the permission audit of everything
the module did, and finally the delete.
"""

from __future__ import annotations

import json
import time

import pytest

import kaudit_harness as kh
from kaudit.k8s import permissions
from kaudit.reconcile.service import STATUS_HOLD
from kaudit_harness import wait_settled
from plane import wait_for

NAME = "cluster"
NS = "kaudit-system"
AGENT_NS = kh.AGENT_NAMESPACE
POLICY_CM = f"kaudit-{NAME}-policy"
AGENT_DS = f"kaudit-{NAME}-agent"
INSTALLER = f"kaudit-{NAME}-policy-installer"
CONTROL_PLANE_TOLERATION = {"effect": "NoSchedule", "key": "node-role.kubernetes.io/control-plane",
                            "operator": "Exists"}
HEARTBEAT = "15"  # installer Lease renewals inside the idle window: they must not make the operator write


def collection(spec_extra: dict | None = None) -> dict:
    spec = {
        "policy": {"profile": "Default"},
        "agent": {"mode": "Managed", "namespace": AGENT_NS,
                  "managed": {"apiKeySecretRef": {"name": "datadog-secret", "key": "api-key"}}},
        "logs": {"tags": ["env:realcluster"]},
    }
    spec.update(spec_extra or {})
    return {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": NAME},
            "spec": spec}


@pytest.fixture(scope="module")
def managed(control_plane, kaudit_installed, tmp_path_factory):
    plane = control_plane
    start = plane.audit_mark()
    if plane.get_or_none("secret", "-n", AGENT_NS, "datadog-secret") is None:
        plane.kubectl("create", "secret", "generic", "-n", AGENT_NS, "datadog-secret", "--from-literal=api-key=x")
    operator = kaudit_installed.start_chart_operator()
    created = time.monotonic()
    plane.apply(collection())
    installers = plane.start_installers(collection=NAME, namespace=NS, args=("--heartbeat", HEARTBEAT),
                                        policy_dir=lambda node: tmp_path_factory.mktemp(f"policy-{node}"))
    state = {"operator": operator, "installers": installers, "start": start, "created": created}
    try:
        yield state
    finally:
        kh.delete_collection(plane, NAME)
        for installer in installers:
            installer.stop()
        state["operator"].stop()


def agent_pods(plane) -> list[dict]:
    return plane.get("pods", "-n", AGENT_NS, "-l", f"{kh.COLLECTION_LABEL}={NAME}")["items"]


def operator_writes(plane, installation, mark) -> list[dict]:
    return plane.requests_since(mark, user=installation.user())


def test_create_becomes_ready_with_the_installers_in_the_loop(control_plane, kaudit_installed, managed):
    plane = control_plane
    plane.kubectl("wait", "--for=condition=Ready", f"ac/{NAME}", "--timeout=60s")
    elapsed = time.monotonic() - managed["created"]
    status = plane.get("ac", NAME)["status"]
    assert status["observedGeneration"] == 1
    reported = {node["name"]: node["installedHash"] for node in status["nodes"]}
    assert sorted(reported) == sorted(plane.control_plane_nodes)
    assert all(value.startswith(status["policy"]["hash"]) for value in reported.values()), reported
    # What the installers wrote is the ConfigMap's policy, byte for byte.
    for installer in managed["installers"]:
        assert installer.target.read_text() == installer.source.read_text()
    condition = kh.conditions(plane, NAME)["PolicyInstalled"]
    assert condition["status"] == "True", condition
    print(f"create -> Ready in {elapsed:.2f} s (installers started after the create)")


def test_kubectl_explain_describes_the_spec(control_plane, managed):
    # Discovery lags a moment behind the CRD's Established condition: retry.
    def explained():
        done = control_plane.kubectl("explain", "auditcollection.spec", check=False)
        return done.returncode == 0 and done.stdout
    text = wait_for(explained, 30, "kubectl explain auditcollection.spec")
    for field in ("policy", "agent", "apiServer", "logs"):
        assert f"{field}\t" in text or f"  {field}" in text, f"{field} missing from:\n{text}"


def test_children_are_owned_by_the_collection(control_plane, managed):
    plane = control_plane
    uid = plane.get("ac", NAME)["metadata"]["uid"]
    owned = [obj for obj in kh.children(plane, NAME) if obj["kind"] != "Lease"]
    assert {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in owned} == {
        ("ConfigMap", NS, POLICY_CM), ("ServiceAccount", NS, INSTALLER), ("Role", NS, INSTALLER),
        ("RoleBinding", NS, INSTALLER), ("DaemonSet", NS, INSTALLER),
        ("ConfigMap", AGENT_NS, f"kaudit-{NAME}-agent-config"), ("ServiceAccount", AGENT_NS, AGENT_DS),
        ("DaemonSet", AGENT_NS, AGENT_DS)}
    for obj in owned:
        refs = obj["metadata"].get("ownerReferences", [])
        assert [(r["kind"], r["name"], r["uid"], r.get("controller")) for r in refs] == [
            ("AuditCollection", NAME, uid, True)], obj["metadata"]["name"]
    # The node reports belong to the installer pod of their node, so they go with it.
    installer_pods = {p["metadata"]["uid"]: p["spec"]["nodeName"]
                      for p in plane.get("pods", "-n", NS, "-l", f"{kh.COLLECTION_LABEL}={NAME}")["items"]}
    leases = [obj for obj in kh.children(plane, NAME, "leases")]
    assert sorted(installer_pods[lease["metadata"]["ownerReferences"][0]["uid"]] for lease in leases) == \
        sorted(plane.control_plane_nodes)


def test_agent_pods_run_on_the_control_plane_nodes_only(control_plane, managed):
    wait_for(lambda: sorted(p["spec"].get("nodeName", "") for p in agent_pods(control_plane))
             == sorted(control_plane.control_plane_nodes), 30, "one agent pod on each control-plane node")


def test_events_are_shown_by_kubectl_describe(control_plane, managed):
    plane = control_plane
    uid = plane.get("ac", NAME)["metadata"]["uid"]
    events = [e for e in plane.get("events", "-A")["items"] if e["involvedObject"].get("uid") == uid]
    reasons = {e["reason"] for e in events}
    assert "Applied" in reasons, reasons
    described = plane.kubectl("describe", "ac", NAME).stdout
    shown = [e for e in events if e["message"] in described]
    assert shown, f"none of {len(events)} Events about the collection in kubectl describe:\n{described}"


def _repaired(plane, installation, mark, predicate, what):
    started = time.monotonic()
    wait_for(predicate, 15, what, interval=0.05)
    elapsed = time.monotonic() - started
    time.sleep(1)  # anything else the repair causes lands in the log too
    writes = kh.describe(operator_writes(plane, installation, mark))
    return elapsed, writes


@pytest.mark.parametrize("kind, namespace, name", [
    ("configmap", NS, POLICY_CM), ("role", NS, INSTALLER)])
def test_a_deleted_child_is_put_back(control_plane, kaudit_installed, managed, kind, namespace, name):
    plane = control_plane
    before = plane.get(kind, "-n", namespace, name)
    mark = plane.audit_mark()
    plane.kubectl("delete", kind, "-n", namespace, name)
    elapsed, writes = _repaired(plane, kaudit_installed, mark,
                                lambda: plane.get_or_none(kind, "-n", namespace, name), f"{kind} {name} back")
    after = plane.get(kind, "-n", namespace, name)
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    for field in ("data", "rules"):
        assert after.get(field) == before.get(field)
    resource = {"configmap": "configmaps", "role": "roles"}[kind]
    assert [w for w in writes if not w.startswith(("create events", "patch auditcollections/status"))] == [
        f"patch {resource} {namespace}/{name}"], writes
    print(f"deleted {kind} back in {elapsed:.2f} s")


def test_an_edited_agent_env_is_put_back(control_plane, kaudit_installed, managed):
    plane = control_plane

    def logs_enabled():
        ds = plane.get("daemonset", "-n", AGENT_NS, AGENT_DS)
        env = ds["spec"]["template"]["spec"]["containers"][0]["env"]
        return next(e.get("value") for e in env if e["name"] == "DD_LOGS_ENABLED")

    assert logs_enabled() == "true"
    mark = plane.audit_mark()
    plane.kubectl("set", "env", "-n", AGENT_NS, f"daemonset/{AGENT_DS}", "-c", "agent", "DD_LOGS_ENABLED=false")
    elapsed, writes = _repaired(plane, kaudit_installed, mark, lambda: logs_enabled() == "true",
                                "DD_LOGS_ENABLED back to true")
    assert f"patch daemonsets {AGENT_NS}/{AGENT_DS}" in writes, writes
    print(f"edited env back in {elapsed:.2f} s")


def test_a_removed_toleration_is_put_back(control_plane, kaudit_installed, managed):
    plane = control_plane

    def tolerations():
        return plane.get("daemonset", "-n", AGENT_NS, AGENT_DS)["spec"]["template"]["spec"]["tolerations"]

    index = tolerations().index(CONTROL_PLANE_TOLERATION)
    mark = plane.audit_mark()
    plane.kubectl("patch", "daemonset", "-n", AGENT_NS, AGENT_DS, "--type=json",
                  "-p", json.dumps([{"op": "remove", "path": f"/spec/template/spec/tolerations/{index}"}]))
    elapsed, writes = _repaired(plane, kaudit_installed, mark, lambda: CONTROL_PLANE_TOLERATION in tolerations(),
                                "the control-plane toleration back")
    assert f"patch daemonsets {AGENT_NS}/{AGENT_DS}" in writes, writes
    print(f"removed toleration back in {elapsed:.2f} s")


def test_a_spec_update_rolls_the_agent_pods(control_plane, managed):
    plane = control_plane
    generation = plane.get("ac", NAME)["metadata"]["generation"]
    old = {p["metadata"]["uid"] for p in agent_pods(plane)}
    old_hash = plane.get("daemonset", "-n", AGENT_NS, AGENT_DS)["spec"]["template"]["metadata"]["annotations"]
    plane.kubectl("patch", "ac", NAME, "--type=merge", "-p", json.dumps({"spec": {"logs": {"tags": ["env:rolled"]}}}))
    kh.wait_condition(plane, NAME, "Ready", status="True", generation=generation + 1)
    template = plane.get("daemonset", "-n", AGENT_NS, AGENT_DS)["spec"]["template"]["metadata"]["annotations"]
    assert template != old_hash  # the config hash moved with the log configuration

    def rolled():
        pods = [p for p in agent_pods(plane) if not p["metadata"].get("deletionTimestamp")]
        return (len(pods) == len(plane.control_plane_nodes) and not old & {p["metadata"]["uid"] for p in pods}
                and all(p["metadata"].get("annotations", {}).items() >= template.items() for p in pods))
    wait_for(rolled, 60, "new agent pods with the new config hash on every control-plane node", interval=0.5)
    config = plane.get("configmap", "-n", AGENT_NS, f"kaudit-{NAME}-agent-config")
    assert "env:rolled" in json.dumps(config["data"])


def test_an_invalid_policy_is_refused_and_the_last_good_one_kept(control_plane, kaudit_installed, managed):
    plane = control_plane
    good_cm = plane.get("configmap", "-n", NS, POLICY_CM)
    good_status = plane.get("ac", NAME)["status"]["policy"]
    installed = [i.target.read_text() for i in managed["installers"]]
    generation = plane.get("ac", NAME)["metadata"]["generation"]
    mark = plane.audit_mark()
    # The CRD's schema accepts it; kube-apiserver's policy loader would not (no leading slash).
    bad = {"spec": {"policy": {"profile": "Default", "rules": [{"level": "Metadata", "nonResourceURLs": ["healthz*"]}]}}}
    plane.kubectl("patch", "ac", NAME, "--type=merge", "-p", json.dumps(bad))
    refused = kh.wait_condition(plane, NAME, "PolicyValid", status="False", generation=generation + 1)
    assert refused["reason"] == "InvalidPolicy"
    assert refused["message"].startswith("spec.policy.rules[0].nonResourceURLs[0]"), refused
    assert kh.conditions(plane, NAME)["Ready"]["status"] == "False"
    time.sleep(1)
    writes = kh.describe(operator_writes(plane, kaudit_installed, mark))
    # Status, the Warning Event and kopf's bookkeeping annotation on the collection; no child.
    assert all(w.startswith(("patch auditcollections", "create events")) for w in writes), writes
    assert plane.get("configmap", "-n", NS, POLICY_CM)["metadata"]["resourceVersion"] == \
        good_cm["metadata"]["resourceVersion"]
    assert plane.get("ac", NAME)["status"]["policy"] == good_status
    assert [i.target.read_text() for i in managed["installers"]] == installed
    warnings = [e for e in plane.get("events", "-n", "default")["items"]
                if e["involvedObject"].get("name") == NAME and e["type"] == "Warning" and e["reason"] == "InvalidPolicy"]
    assert warnings, "no Warning Event InvalidPolicy"
    # Fixed again: Ready comes back.
    plane.kubectl("patch", "ac", NAME, "--type=json", "-p", json.dumps([{"op": "remove", "path": "/spec/policy/rules"}]))
    kh.wait_condition(plane, NAME, "Ready", status="True", generation=generation + 2)


def test_a_second_collection_is_refused_and_gets_nothing(control_plane, managed):
    plane = control_plane
    second = collection()
    second["metadata"]["name"] = "second"
    plane.apply(second)
    try:
        ready = kh.wait_condition(plane, "second", "Ready", status="False", reason="Conflict")
        assert f"'{NAME}'" in ready["message"], ready
        assert kh.children(plane, "second") == []
    finally:
        kh.delete_collection(plane, "second")
    assert kh.conditions(plane, NAME)["Ready"]["status"] == "True"


def test_quiet_when_idle_and_after_a_restart(control_plane, kaudit_installed, managed):
    plane = control_plane
    user = kaudit_installed.user()
    kh.wait_condition(plane, NAME, "Ready", status="True")
    # The echo of the last changes, and a progress status the operator may still hold back.
    wait_settled(plane, user, seconds=STATUS_HOLD + 1.0)
    mark = plane.audit_mark()
    time.sleep(60)
    idle = plane.requests_since(mark, user=user)
    assert kh.describe(idle) == [], "writes while idle"
    heartbeats = [e for e in plane.requests_since(mark, verbs={"patch"})
                  if (e.get("objectRef") or {}).get("resource") == "leases"
                  and e["user"]["username"].endswith(f":{INSTALLER}")]
    assert heartbeats, "no installer heartbeat in the idle window: the window proves less than it should"

    managed["operator"].stop()
    mark = plane.audit_mark()
    managed["operator"] = kaudit_installed.start_chart_operator()
    time.sleep(30)
    assert kh.describe(plane.requests_since(mark, user=user)) == [], "writes after a restart"
    reads = plane.requests_since(mark, user=user, verbs={"list", "watch"})
    assert any((e.get("objectRef") or {}).get("resource") == "auditcollections" for e in reads), \
        "the restarted operator never listed the collections: it proves nothing"
    assert managed["operator"].running, managed["operator"].tail()


def test_every_request_was_allowed_and_is_in_the_permission_table(control_plane, kaudit_installed, managed):
    """The operator under the chart's RBAC, the installers under their own Role: no 403, nothing unlisted."""
    plane = control_plane
    operator = plane.requests_since(managed["start"], user=kaudit_installed.user(), verbs=None)
    assert operator, "no request by the operator's ServiceAccount in the audit log"
    assert kh.permission_problems(operator, kaudit_installed.namespace) == []
    installer_user = f"system:serviceaccount:{NS}:{INSTALLER}"
    installers = plane.requests_since(managed["start"], user=installer_user, verbs=None)
    assert installers, "no request by the installer's ServiceAccount"
    assert [e["responseStatus"]["code"] for e in installers if e["responseStatus"]["code"] >= 400] == []
    # Its node report, and the read of its AuditCollection before each write (the approval check).
    allowed = {(verb, p.resource, NS if p.scope == permissions.OPERATOR_NAMESPACE else None)
               for p in permissions.INSTALLER_PERMISSIONS for verb in p.verbs}
    assert {(e["verb"], e["objectRef"]["resource"], e["objectRef"].get("namespace")) for e in installers} <= allowed
    assert ("get", "auditcollections", None) in {(e["verb"], e["objectRef"]["resource"], e["objectRef"].get("namespace"))
                                                 for e in installers}


def test_delete_garbage_collects_everything(control_plane, managed):
    plane = control_plane
    assert kh.children(plane, NAME)
    for installer in managed["installers"]:  # the kubelet stops the pod's container when the pod goes
        installer.stop()
    kh.delete_collection(plane, NAME)
    wait_for(lambda: kh.children(plane, NAME) == [] and agent_pods(plane) == [], 60,
             "the garbage collector to remove every child, node report and pod")
