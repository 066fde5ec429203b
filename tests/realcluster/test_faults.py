"""Faults on the real control plane: kube-apiserver dying mid-reconcile, a concurrent writer
causing 409s, and the OwnerReferencesPermissionEnforcement admission plugin.

Writes are counted in kube-apiserver's own audit log, by the operator's ServiceAccount, never in
the operator's logs. The operator runs under the chart's real RBAC (kaudit_harness.install).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter

import pytest
import yaml

from kaudit_harness import (APPLIED_HASH, Api, KauditInstall, child_writes, dump, install, object_key, ready_status,
                        successful, wait_settled)
from plane import REPO, PlaneError, wait_for

RELEASE, NAMESPACE, AGENT_NAMESPACE = "kaudit-faults", "faults-system", "faults-agent"
CONVERGE_AFTER_RETURN = 10.0  # seconds, the bound after kube-apiserver is back


@pytest.fixture(scope="module")
def kaudit(control_plane, tmp_path_factory):
    env = install(control_plane, RELEASE, NAMESPACE, AGENT_NAMESPACE)
    env.workdir = tmp_path_factory.mktemp("faults")
    try:
        yield env
    finally:
        env.cleanup()


@pytest.fixture(scope="module")
def managed(kaudit: KauditInstall):
    """A Ready Managed collection with its operator and both nodes' installers running; the audit
    mark taken just before its creation. Shared by the tests below it, in file order."""
    operator = kaudit.start_operator("--standalone")
    mark = kaudit.plane.audit_mark()
    kaudit.create(kaudit.managed("faults"))
    kaudit.start_installers("faults", kaudit.workdir)
    kaudit.wait_ready("faults")
    wait_settled(kaudit.plane, kaudit.user())
    try:
        yield operator, mark
    finally:
        kaudit.cleanup()


class ReadModifyWriter:
    """Another controller on the user's DaemonSet: GET, set its own annotation and env var, PUT
    with the resourceVersion it read (409 when someone wrote meanwhile: read again), in a tight loop."""

    ANNOTATION, ENV = "writer.example/generation", "WRITER_GENERATION"

    def __init__(self, plane, namespace: str, name: str):
        self.api = Api(plane)
        self.path = f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}"
        self.written = 0  # the last generation the server accepted
        self.conflicts = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            status, body = self.api.request("GET", self.path)
            assert status == 200, body
            generation = self.written + 1
            body["metadata"].setdefault("annotations", {})[self.ANNOTATION] = str(generation)
            container = body["spec"]["template"]["spec"]["containers"][0]
            env = [e for e in container.get("env", []) if e["name"] != self.ENV]
            container["env"] = [*env, {"name": self.ENV, "value": str(generation)}]
            status, answer = self.api.request("PUT", self.path + "?fieldManager=writer", body)
            if status == 409:
                self.conflicts += 1
            else:
                assert status == 200, answer
                self.written = generation
            time.sleep(0.005)

    def __enter__(self) -> "ReadModifyWriter":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(60)
        self.api.close()


def user_daemonset(namespace: str) -> dict:
    """The trimmed Datadog chart DaemonSet of examples/, in the test's namespace."""
    body = yaml.safe_load((REPO / "examples" / "existing" / "datadog-agent-daemonset.yaml").read_text())
    body["metadata"]["namespace"] = namespace
    return body


def test_concurrent_writer_409s_converge_and_keep_user_fields(kaudit):
    plane, user = kaudit.plane, kaudit.user()
    original = user_daemonset(AGENT_NAMESPACE)
    plane.kubectl("delete", "daemonset", "-n", AGENT_NAMESPACE, "datadog-agent", "--ignore-not-found")
    plane.apply(original, "--server-side", "--field-manager=helm")
    operator = kaudit.start_operator("--standalone")
    spec = {"agent": {"mode": "DaemonSet", "namespace": AGENT_NAMESPACE,
                      "daemonSet": {"name": "datadog-agent", "container": "agent"}},
            "apiServer": {"installPolicy": False}}
    body = {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": "conflicts"},
            "spec": spec}
    mark = plane.audit_mark()
    try:
        with ReadModifyWriter(plane, AGENT_NAMESPACE, "datadog-agent") as writer:
            kaudit.create(body)
            kaudit.wait_ready("conflicts")
            patched = plane.get("daemonset", "-n", AGENT_NAMESPACE, "datadog-agent")
            assert APPLIED_HASH in patched["metadata"]["annotations"]
            time.sleep(1)
            kaudit.delete_collection("conflicts")  # the hand-back: a merge patch guarded by resourceVersion
        final = plane.get("daemonset", "-n", AGENT_NAMESPACE, "datadog-agent")
    finally:
        kaudit.cleanup()
    events = plane.requests_since(mark, user=user, verbs=None)
    assert operator.running or operator.popen.returncode in (0, -15), operator.tail()
    # kaudit's requests on DaemonSets: a read of this one, a list (a new reconcile or hand-back), a write.
    target = ("daemonsets", AGENT_NAMESPACE, "datadog-agent")
    on_daemonsets = [e for e in events if object_key(e) == target or (object_key(e)[0] == "daemonsets"
                                                                       and e["verb"] in ("list", "watch"))]
    on_daemonsets = [e for e in on_daemonsets if e["verb"] != "watch"]
    refused = [i for i, e in enumerate(on_daemonsets) if e["responseStatus"]["code"] == 409]
    assert writer.conflicts + len(refused) > 0, "no 409 happened"
    # A refused guarded write is computed again from a fresh read (a get, or the list of a retried
    # hand-back), never resent as it was.
    assert all(i + 1 < len(on_daemonsets) and on_daemonsets[i + 1]["verb"] in ("get", "list") for i in refused), \
        dump(on_daemonsets)
    # Nothing of the writer lost: its last accepted generation is there, annotation and env.
    assert final["metadata"]["annotations"]["writer.example/generation"] == str(writer.written)
    agent = final["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "WRITER_GENERATION", "value": str(writer.written)} in agent["env"]
    # Nothing of kaudit left: the user's own tolerations and containers as applied.
    template = original["spec"]["template"]["spec"]
    assert final["spec"]["template"]["spec"].get("tolerations") == template.get("tolerations")
    assert APPLIED_HASH not in final["metadata"]["annotations"]
    assert [c["name"] for c in final["spec"]["template"]["spec"]["containers"]] == [
        c["name"] for c in template["containers"]]


def test_owner_references_permission_enforcement_managed_create_under_chart_rbac(kaudit, managed):
    """Managed mode puts owner references with blockOwnerDeletion on what it creates; with
    OwnerReferencesPermissionEnforcement that needs update on auditcollections/finalizers, which
    the chart grants for exactly this reason."""
    plane, user = kaudit.plane, kaudit.user()
    _, mark = managed
    collection = plane.get("auditcollection", "faults")
    # The plugin is on: a subject without that permission cannot set blockOwnerDeletion.
    plane.kubectl("create", "role", "cm-writer", "-n", AGENT_NAMESPACE, "--verb=create", "--resource=configmaps",
                  check=False)
    plane.kubectl("create", "rolebinding", "cm-writer", "-n", AGENT_NAMESPACE, "--role=cm-writer", "--user=carol",
                  check=False)
    owned = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "owned-by-carol", "namespace": AGENT_NAMESPACE,
        "ownerReferences": [{"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "name": "faults",
                             "uid": collection["metadata"]["uid"], "blockOwnerDeletion": True}]}}
    refused = plane.kubectl("create", "-f", "-", input=json.dumps(owned), check=False,
                            kubeconfig=plane.kubeconfig_for_user("carol"))
    assert refused.returncode != 0 and "blockOwnerDeletion" in refused.stderr, refused.stderr
    # kaudit's creates under the chart's RBAC all went through, each object owned by the collection.
    requests = plane.requests_since(mark, user=user, verbs=None)
    # (A list of an absent CRD, DatadogAgent, is a 404 that kaudit reads as empty.)
    refused = [e for e in requests if e["responseStatus"]["code"] >= 400
               and not (e["verb"] == "list" and e["responseStatus"]["code"] == 404)]
    assert refused == [], dump(refused)
    children = kaudit.children("faults")
    assert {key[0] for key in children} == {"configmaps", "serviceaccounts", "daemonsets", "roles", "rolebindings"}
    for key, child in children.items():
        assert child["metadata"]["ownerReferences"] == [{
            "apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "name": "faults",
            "uid": collection["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}], key
    created = {object_key(e) for e in successful(requests) if e["verb"] == "patch"
               and e["responseStatus"]["code"] == 201}
    assert created >= set(children)


def first_write_seen(plane, mark: int, user: str) -> list[dict]:
    return child_writes(successful(plane.requests_since(mark, user=user)))


def sync_installers(kaudit: KauditInstall) -> None:
    for installer in kaudit.installers:
        try:
            installer.sync()  # as the kubelet refreshes a ConfigMap volume
        except PlaneError:
            pass  # the API server is not back yet


def test_apiserver_killed_mid_reconcile_no_crash_no_duplicate_writes(kaudit, managed):
    operator, _ = managed
    plane, user = kaudit.plane, kaudit.user()
    before = kaudit.applied_hashes("faults")
    mark = plane.audit_mark()
    # A spec change that rewrites four objects (policy, installer DaemonSet, agent config, agent DaemonSet).
    plane.kubectl("patch", "auditcollection", "faults", "--type=merge", "-p",
                  '{"spec":{"policy":{"profile":"Datadog"},"logs":{"tags":["fault:restart"]},'
                  '"apiServer":{"policyFile":"/etc/kubernetes/audit-fault/policy.yaml"},'
                  '"agent":{"managed":{"site":"datadoghq.eu"}}}}')
    # Freeze the operator right after its first write lands, so kube-apiserver dies mid-reconcile
    # with no request of the operator in flight (a request cut mid-way would leave no audit line).
    wait_for(lambda: first_write_seen(plane, mark, user), 30, "the operator's first write", interval=0.002)
    os.kill(operator.popen.pid, signal.SIGSTOP)
    try:
        time.sleep(0.3)
        written_before_kill = first_write_seen(plane, mark, user)
        plane.kill_apiserver()
    finally:
        os.kill(operator.popen.pid, signal.SIGCONT)
    time.sleep(3)  # the operator meets connection errors: retries, then kopf's retry
    plane.start_apiserver()
    returned = time.monotonic()

    def converged():
        sync_installers(kaudit)
        return ready_status(plane.get_or_none("auditcollection", "faults"), generation=2)

    wait_for(converged, 60, "the collection Ready for generation 2 after kube-apiserver's return", interval=0.1)
    took = time.monotonic() - returned
    assert operator.running, f"the operator exited:\n{operator.tail()}"
    assert "Traceback" not in operator.output(), operator.tail(60)

    after = kaudit.applied_hashes("faults")
    assert set(after) == set(before), "the same objects, none lost, none extra"
    changed = {key for key in after if after[key] != before[key]}
    writes = Counter(object_key(e) for e in child_writes(successful(plane.requests_since(mark, user=user))))
    assert len(written_before_kill) < len(changed), "kube-apiserver must die before the reconcile finished"
    # Each changed object written exactly once across the outage, the others not at all.
    assert writes == Counter({key: 1 for key in changed}), dump(plane.requests_since(mark, user=user))
    assert took <= CONVERGE_AFTER_RETURN, f"converged {took:.1f} s after kube-apiserver's return"


