"""Tamper resistance on the real control plane (docs/security.md).

kaudit is installed with ``kubectl apply -k manifests/`` and runs as the chart runs it; the policy
installers on the two hollow control-plane nodes are real ``kaudit install-policy`` processes with
the installer ServiceAccount's token. A user with full rights in the operator namespace only (alice,
a RoleBinding to the built-in ``admin`` ClusterRole there) edits the policy ConfigMap to
``level: None``:

* the installers keep the approved policy byte for byte, the refusal is in status and an Event;
* the edit is in kube-apiserver's audit log, and kaudit's Default profile, rendered for this
  collection, puts it at RequestResponse. The plane's kube-apiserver records every request at
  Metadata with its own policy (the write counting of the other real-cluster tests depends on it),
  so the level is decided by kaudit's policy engine (kube-apiserver's rule matching, tested
  against the upstream code's cases) on the recorded request;
* a legitimate change through the AuditCollection still reaches both nodes, never refused.

The kubelet's part (copying the ConfigMap into the pod's volume) is played by ``Installer.sync()``;
for the tampered ConfigMap the test writes alice's content into the installers' sources, as a
kubelet would have had it synced in the moment before kaudit's drift repair put the ConfigMap back.
"""

from __future__ import annotations

import json
import time

import pytest

import kaudit_harness as kh
from kaudit.policy import PolicyOptions, compose_policy, content_hash, load_policy
from kaudit.policy.evaluate import Evaluator
from kaudit.render.policy import self_audit
from plane import wait_for

NAME = "tamper"
NS = "kaudit-system"
POLICY_CM = f"kaudit-{NAME}-policy"
INSTALLER_SA = f"kaudit-{NAME}-policy-installer"
ATTACKER = "alice"
LOWERED = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n"


def collection(policy: dict) -> dict:
    return {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": NAME},
            "spec": {"policy": policy, "agent": {"mode": "None"}}}


@pytest.fixture(scope="module")
def tamper(control_plane, kaudit_installed, tmp_path_factory):
    plane = control_plane
    started = time.monotonic()
    operator = kaudit_installed.start_chart_operator(name="operator-tamper")
    plane.apply(collection({"profile": "Default"}))
    installers = plane.start_installers(collection=NAME, namespace=NS,
                                        policy_dir=lambda node: tmp_path_factory.mktemp(f"tamper-{node}"))
    plane.kubectl("create", "rolebinding", "alice-admin", "-n", NS, "--clusterrole=admin", f"--user={ATTACKER}")
    try:
        kh.wait_condition(plane, NAME, "Ready", status="True", timeout=60)
        print(f"tamper: operator start -> Ready on both nodes {time.monotonic() - started:.2f} s")
        yield {"operator": operator, "installers": installers, "alice": plane.kubeconfig_for_user(ATTACKER)}
    finally:
        plane.kubectl("delete", "rolebinding", "alice-admin", "-n", NS, "--ignore-not-found")
        kh.delete_collection(plane, NAME)
        for installer in installers:
            installer.stop()
        operator.stop()


def can(plane, verb: str, resource: str, *, namespace: str | None = NS, user: str | None = None,
        kubeconfig=None, subresource: str = "") -> bool:
    """kube-apiserver's own answer (a SelfSubjectAccessReview, or a SubjectAccessReview with --as)."""
    args = ["auth", "can-i", verb, resource]
    args += ["-n", namespace] if namespace else []
    args += [f"--subresource={subresource}"] if subresource else []
    args += [f"--as={user}"] if user else []
    done = plane.kubectl(*args, kubeconfig=kubeconfig, check=False)
    assert done.stdout.strip() in ("yes", "no"), done.stderr
    return done.stdout.strip() == "yes"


def test_who_can_change_what_reaches_the_nodes(control_plane, tamper):
    plane, alice = control_plane, tamper["alice"]
    installer = f"system:serviceaccount:{NS}:{INSTALLER_SA}"
    operator = f"system:serviceaccount:{NS}:kaudit"
    # The namespace admin writes the ConfigMap and the installer DaemonSet, not the approval...
    assert can(plane, "patch", "configmaps", kubeconfig=alice)
    assert can(plane, "patch", "daemonsets.apps", kubeconfig=alice)
    assert not can(plane, "patch", "auditcollections.kaudit.dev", namespace=None, kubeconfig=alice)
    assert not can(plane, "patch", "auditcollections.kaudit.dev", namespace=None, subresource="status", kubeconfig=alice)
    # ...but can borrow the operator's identity, which writes it (docs/security.md says so).
    assert can(plane, "impersonate", "serviceaccounts/kaudit", kubeconfig=alice)
    assert can(plane, "create", "serviceaccounts/kaudit", subresource="token", kubeconfig=alice)
    assert can(plane, "patch", "auditcollections.kaudit.dev", namespace=None, subresource="status", user=operator)
    # The installer (a node's token) reads its approval and changes nothing that reaches a node.
    assert can(plane, "get", f"auditcollections.kaudit.dev/{NAME}", namespace=None, user=installer)
    for verb, resource, namespace, sub in (("patch", "configmaps", NS, ""), ("patch", "daemonsets.apps", NS, ""),
                                           ("patch", "auditcollections.kaudit.dev", None, "status"),
                                           ("create", "pods", NS, ""), ("create", "rolebindings", NS, "")):
        assert not can(plane, verb, resource, namespace=namespace, subresource=sub, user=installer), (verb, resource)


def policy_in_place(installers) -> dict[str, bytes]:
    return {i.node: i.target.read_bytes() for i in installers} | {
        f"{i.node}.previous": i.target.with_name(i.target.name + ".previous").read_bytes()
        for i in installers if i.target.with_name(i.target.name + ".previous").exists()}


def test_a_namespace_admin_lowering_the_policy_is_refused_and_recorded(control_plane, tamper):
    plane, installers = control_plane, tamper["installers"]
    approved = plane.get("ac", NAME)["status"]["policy"]["fullHash"]
    before = policy_in_place(installers)
    assert all(content_hash(i.target.read_text()) == approved for i in installers)
    mark = plane.audit_mark()

    plane.kubectl("patch", "configmap", POLICY_CM, "-n", NS, "--type=merge",
                  "-p", json.dumps({"data": {"policy.yaml": LOWERED}}), kubeconfig=tamper["alice"])
    for installer in installers:  # the kubelets hand the edited ConfigMap to the installers
        partial = installer.source.with_name(".policy.yaml.partial")
        partial.write_text(LOWERED)
        partial.replace(installer.source)

    refused = kh.wait_condition(plane, NAME, "PolicyInstalled", status="False", reason="PolicyRefused", timeout=20)
    lowered = content_hash(LOWERED)
    assert f"refused policy {lowered[:12]}" in refused["message"] and f"kept {approved[:12]} installed" in refused["message"]
    assert kh.conditions(plane, NAME)["Ready"]["reason"] == "PolicyRefused"
    wait_for(lambda: all(n.get("refusedHash") == lowered for n in plane.get("ac", NAME)["status"]["nodes"]), 20,
             "both nodes to report the refusal")
    events = wait_for(lambda: [e for e in plane.get("events", "-n", "default")["items"]
                               if e["reason"] == "PolicyRefused" and e["involvedObject"]["name"] == NAME], 20,
                      "a PolicyRefused Event")
    assert events[0]["type"] == "Warning" and lowered[:12] in events[0]["message"]
    # Byte for byte: the approved policy and the kept previous one, on both nodes.
    assert policy_in_place(installers) == before
    for installer in installers:
        report = plane.get("lease", "-n", NS, f"kaudit-{NAME}-policy-{installer.node}")["metadata"]["annotations"]
        assert report["kaudit.dev/refused-hash"] == lowered and report["kaudit.dev/installed-hash"] == approved
    # Drift repair puts the ConfigMap back (the operator's own write).
    wait_for(lambda: content_hash(plane.get("configmap", "-n", NS, POLICY_CM)["data"]["policy.yaml"]) == approved,
             20, "the operator to put the policy ConfigMap back")

    # The edit in the audit log: alice's patch, evaluated with kaudit's Default profile as rendered
    # for this collection in this namespace (what kube-apiserver would run with kaudit's policy).
    [edit] = [e for e in plane.requests_since(mark, user=ATTACKER)
              if e["objectRef"].get("resource") == "configmaps" and e["objectRef"].get("name") == POLICY_CM]
    assert (edit["verb"], edit["responseStatus"]["code"]) == ("patch", 200)
    default = compose_policy(PolicyOptions(self_audit=self_audit(NAME, NS)))
    decision = Evaluator(load_policy(default.text).policy).evaluate_event(edit)
    assert (decision.level, decision.rule) == ("RequestResponse", 1)  # the second self-audit rule
    assert "ResponseComplete" not in decision.omit_stages
    without = compose_policy(PolicyOptions(self_audit=None))  # the Default profile before this issue
    assert Evaluator(load_policy(without.text).policy).evaluate_event(edit).level == "Metadata"

    # The kubelets sync the repaired ConfigMap: the refusal clears.
    for installer in installers:
        installer.sync()
    kh.wait_condition(plane, NAME, "Ready", status="True", timeout=20)
    assert policy_in_place(installers) == before


def test_a_change_through_the_collection_reaches_every_node_unrefused(control_plane, tamper):
    plane, installers = control_plane, tamper["installers"]
    old = plane.get("configmap", "-n", NS, POLICY_CM)["data"]["policy.yaml"]
    edited = time.monotonic()
    plane.kubectl("patch", "ac", NAME, "--type=merge", "-p", json.dumps({"spec": {"policy": {"omitReadOnly": True}}}))
    new = wait_for(lambda: (plane.get("configmap", "-n", NS, POLICY_CM)["data"]["policy.yaml"] != old
                            and plane.get("configmap", "-n", NS, POLICY_CM)["data"]["policy.yaml"]), 20,
                   "the ConfigMap to carry the new policy", interval=0.05)
    in_config_map = time.monotonic()
    for installer in installers:  # a kubelet that syncs at once: the fastest delivery there is
        installer.sync()
    wait_for(lambda: all(i.target.read_text() == new for i in installers), 20, "both nodes to install it",
             interval=0.02)
    installed = time.monotonic()
    assert content_hash(new) == plane.get("ac", NAME)["status"]["policy"]["fullHash"]
    # Approved before the ConfigMap carried it: no installer ever refused it.
    for installer in installers:
        assert f"refused policy {content_hash(new)[:12]}" not in installer.process.output()
    kh.wait_condition(plane, NAME, "PolicyInstalled", status="True", timeout=20)
    print(f"AC edit -> ConfigMap {in_config_map - edited:.2f} s; ConfigMap in the volume -> installed on "
          f"both nodes {installed - in_config_map:.2f} s; AC edit -> both nodes {installed - edited:.2f} s")
