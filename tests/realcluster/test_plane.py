"""The fixture itself: the nodes the scenarios rely on, static users, the audit log as oracle, restarts."""

from __future__ import annotations

import json

from plane import WRITE_VERBS


def test_nodes_control_plane_labelled_and_tainted_worker_plain(control_plane):
    nodes = {n["metadata"]["name"]: n for n in control_plane.get("nodes")["items"]}
    assert set(nodes) == {"cp-1", "cp-2", "worker-1"}
    for name in control_plane.control_plane_nodes:
        assert "node-role.kubernetes.io/control-plane" in nodes[name]["metadata"]["labels"]
        assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in [
            {k: t[k] for k in ("key", "effect")} for t in nodes[name]["spec"]["taints"]]
    assert "node-role.kubernetes.io/control-plane" not in nodes["worker-1"]["metadata"]["labels"]
    assert not nodes["worker-1"]["spec"].get("taints")


def test_audit_log_counts_a_static_users_writes_and_refusals(control_plane):
    alice = control_plane.kubeconfig_for_user("alice")
    mark = control_plane.audit_mark()
    refused = control_plane.kubectl("create", "configmap", "plane-test-refused", "-n", "default",
                                    kubeconfig=alice, check=False)
    assert refused.returncode != 0
    control_plane.kubectl("create", "configmap", "plane-test-admin", "-n", "default")
    control_plane.kubectl("delete", "configmap", "plane-test-admin", "-n", "default")
    mine = control_plane.requests_since(mark, user="alice")
    assert [(e["verb"], e["objectRef"]["resource"], e["responseStatus"]["code"]) for e in mine] == [
        ("create", "configmaps", 403)]
    admin = [e for e in control_plane.requests_since(mark) if e["objectRef"].get("name") == "plane-test-admin"]
    assert sorted(e["verb"] for e in admin) == ["create", "delete"]
    assert all(e["verb"] in WRITE_VERBS for e in control_plane.requests_since(mark))


def test_a_service_account_token_authenticates_as_the_service_account(control_plane):
    control_plane.kubectl("create", "serviceaccount", "plane-test", "-n", "default")
    kubeconfig = control_plane.kubeconfig_for_service_account("default", "plane-test")
    done = control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig)
    assert json.loads(done.stdout)["status"]["userInfo"]["username"] == "system:serviceaccount:default:plane-test"


def test_restarted_apiserver_keeps_data_and_credentials(control_plane):
    control_plane.kubectl("create", "configmap", "plane-test-restart", "-n", "default", "--from-literal=k=v")
    control_plane.restart_apiserver()
    assert control_plane.get("configmap", "plane-test-restart", "-n", "default")["data"] == {"k": "v"}
    control_plane.kubectl("delete", "configmap", "plane-test-restart", "-n", "default")
