"""Node reports (Leases) and their aggregation into status.nodes and the PolicyInstalled condition."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import kubernetes_validate
import pytest

from kaudit.installer.follow import Outcome
from kaudit.installer.lease import Identity, report_lease, report_name
from kaudit.installer.reports import aggregate, apiservers_by_node, parse_time, restart_required, parse_report
from kaudit.installer.service import Reporter
from kaudit.installer.writer import InstallResult

DESIRED = "a" * 64
OLD = "b" * 64
T0 = datetime(2026, 11, 22, 12, 0, 0, 500000, tzinfo=timezone.utc)  # an install half-way through a second


def lease(node: str, hash_: str = DESIRED, installed_at: datetime | None = T0, error: str = "",
          renewed: datetime | None = None, lease_seconds: int = 180) -> dict:
    return report_lease(
        Identity("cluster", node, "kaudit-system", f"installer-{node}", f"uid-{node}"),
        policy_file="/etc/kubernetes/audit-policies/policy.yaml",
        installed_hash=hash_,
        installed_at=installed_at,
        error=error,
        now=renewed or installed_at or T0,
        lease_seconds=lease_seconds,
    )


def apiserver_pod(node: str, started: str | None, *, waiting: str = "", start_time: str = "2026-11-01T00:00:00Z") -> dict:
    state = {"running": {"startedAt": started}} if started else {"waiting": {"reason": waiting or "CrashLoopBackOff"}}
    return {
        "metadata": {"name": f"kube-apiserver-{node}", "namespace": "kube-system",
                     "labels": {"component": "kube-apiserver", "tier": "control-plane"}},
        "spec": {"nodeName": node},
        "status": {"startTime": start_time,
                   "containerStatuses": [{"name": "kube-apiserver", "state": state}]},
    }


# --- the report object ------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1.29", "1.33", "1.37"])
def test_the_report_is_a_valid_lease(version):
    kubernetes_validate.validate(lease("cp-1"), version, strict=True)


def test_the_report_names_its_node_and_is_owned_by_the_installer_pod():
    body = lease("cp-1")
    assert body["metadata"]["name"] == "kaudit-cluster-policy-cp-1"
    assert body["metadata"]["labels"]["kaudit.dev/collection"] == "cluster"
    assert body["metadata"]["labels"]["app.kubernetes.io/component"] == "policy-installer"
    assert body["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "installer-cp-1", "uid": "uid-cp-1"}
    ]
    assert body["spec"]["holderIdentity"] == "cp-1"
    assert body["metadata"]["annotations"]["kaudit.dev/installed-at"] == "2026-11-22T12:00:00.500000Z"


def test_a_report_name_for_a_very_long_node_name_stays_a_valid_name():
    node = ".".join(["segment-of-a-long-node-name"] * 9)[:253]
    name = report_name("cluster", node)
    assert len(name) <= 253 and name != report_name("cluster", node[:-1])
    body = lease(node)
    kubernetes_validate.validate(body, "1.37", strict=True)


def test_a_report_reads_back_as_written():
    report = parse_report(lease("cp-1", error="boom"))
    assert (report.node, report.installed_hash, report.installed_at, report.error) == ("cp-1", DESIRED, T0, "boom")
    assert parse_report({"metadata": {"name": "unrelated"}}) is None


class FakeSender:
    def __init__(self, ok: bool = True):
        self.bodies: list[dict] = []
        self.ok = ok

    def send(self, body: dict) -> bool:
        self.bodies.append(body)
        return self.ok


def test_the_reporter_sends_on_change_and_renews_on_its_heartbeat():
    now = [T0]
    sender = FakeSender()
    reporter = Reporter(sender, Identity("cluster", "cp-1", "kaudit-system"), Path("/p/policy.yaml"),
                        heartbeat=60, clock=lambda: now[0])
    result = InstallResult(Path("/p/policy.yaml"), DESIRED, changed=True, installed_at=T0)
    reporter.record(Outcome(result=result))
    reporter.flush()  # nothing new, heartbeat not due
    assert len(sender.bodies) == 1
    now[0] = T0 + timedelta(seconds=61)
    reporter.flush()
    assert len(sender.bodies) == 2 and sender.bodies[1]["spec"]["renewTime"] == "2026-11-22T12:01:01.500000Z"
    reporter.record(Outcome(error="/src/policy.yaml: invalid policy: rules[0].level: bad"))
    last = sender.bodies[-1]["metadata"]["annotations"]
    # The failed round keeps what is installed and says why the new one is not.
    assert last["kaudit.dev/installed-hash"] == DESIRED and "invalid policy" in last["kaudit.dev/error"]


def test_the_reporter_retries_a_failed_send():
    sender = FakeSender(ok=False)
    reporter = Reporter(sender, Identity("cluster", "cp-1", "kaudit-system"), Path("/p"), heartbeat=60,
                        clock=lambda: T0)
    reporter.record(Outcome(error="x"))
    reporter.flush()
    assert len(sender.bodies) == 2


# --- restartRequired --------------------------------------------------------------------------

def test_apiserver_start_is_the_container_start_not_the_pod_start():
    # The pod started long ago; the container restarted after the install: the new policy is loaded.
    pod = apiserver_pod("cp-1", "2026-11-22T12:05:00Z", start_time="2026-11-01T00:00:00Z")
    servers = apiservers_by_node([pod])
    assert servers["cp-1"].started_at == parse_time("2026-11-22T12:05:00Z")
    assert restart_required(parse_report(lease("cp-1")), servers["cp-1"], DESIRED) is False


@pytest.mark.parametrize(
    ("started", "expected"),
    [
        ("2026-11-22T11:59:59Z", True),   # before the install
        ("2026-11-22T12:00:00Z", True),   # same second (install at .5): may have read either file
        ("2026-11-22T12:00:01Z", False),  # a later second: read the new file
    ],
)
def test_restart_required_compares_the_start_with_the_install(started, expected):
    server = apiservers_by_node([apiserver_pod("cp-1", started)])["cp-1"]
    assert restart_required(parse_report(lease("cp-1")), server, DESIRED) is expected


def test_restart_state_is_unknown_without_a_mirror_pod_or_before_the_install():
    report = parse_report(lease("cp-1"))
    assert restart_required(report, None, DESIRED) == "unknown"
    server = apiservers_by_node([apiserver_pod("cp-1", None)])["cp-1"]
    assert restart_required(report, server, DESIRED) == "unknown"  # not running: no start to compare
    server = apiservers_by_node([apiserver_pod("cp-1", "2026-11-22T11:00:00Z")])["cp-1"]
    assert restart_required(parse_report(lease("cp-1", hash_=OLD)), server, DESIRED) == "unknown"
    assert restart_required(None, server, DESIRED) == "unknown"


def test_pods_that_are_not_apiserver_mirror_pods_are_ignored():
    other = apiserver_pod("cp-1", "2026-11-22T12:05:00Z")
    other["metadata"]["labels"] = {"component": "etcd"}
    assert apiservers_by_node([other]) == {}


# --- aggregation ------------------------------------------------------------------------------

def test_all_nodes_installed_and_restarted_after_is_installed():
    summary = aggregate(
        [lease("cp-1"), lease("cp-2")],
        [apiserver_pod("cp-1", "2026-11-22T12:10:00Z"), apiserver_pod("cp-2", "2026-11-22T12:11:00Z")],
        DESIRED,
    )
    assert summary.nodes == [
        {"name": "cp-1", "installedHash": DESIRED, "installedAt": "2026-11-22T12:00:00Z",
         "apiServerStartedAt": "2026-11-22T12:10:00Z", "restartRequired": False,
         "message": "kube-apiserver runs this policy"},
        {"name": "cp-2", "installedHash": DESIRED, "installedAt": "2026-11-22T12:00:00Z",
         "apiServerStartedAt": "2026-11-22T12:11:00Z", "restartRequired": False,
         "message": "kube-apiserver runs this policy"},
    ]
    assert summary.condition == {"type": "PolicyInstalled", "status": "True", "reason": "Installed",
                                 "message": "policy aaaaaaaaaaaa installed on all 2 node(s)"}


def test_an_apiserver_that_started_before_the_install_needs_a_restart():
    summary = aggregate([lease("cp-1"), lease("cp-2")],
                        [apiserver_pod("cp-1", "2026-11-20T08:00:00Z"), apiserver_pod("cp-2", "2026-11-22T12:10:00Z")],
                        DESIRED)
    assert [n["restartRequired"] for n in summary.nodes] == [True, False]
    assert summary.condition["status"] == "True" and summary.condition["reason"] == "RestartRequired"
    assert "cp-1" in summary.condition["message"] and "cp-2" not in summary.condition["message"]


def test_a_node_with_an_older_hash_or_without_report_is_pending():
    summary = aggregate([lease("cp-1"), lease("cp-2", hash_=OLD)],
                        [apiserver_pod(n, "2026-11-22T12:10:00Z") for n in ("cp-1", "cp-2", "cp-3")], DESIRED)
    assert [n["name"] for n in summary.nodes] == ["cp-1", "cp-2", "cp-3"]
    assert "installedHash" not in summary.nodes[2] and summary.nodes[2]["restartRequired"] == "unknown"
    assert summary.condition["status"] == "False" and summary.condition["reason"] == "Installing"
    assert summary.condition["message"] == "policy aaaaaaaaaaaa installed on 1 of 3 node(s); waiting for cp-2, cp-3"


def test_a_control_plane_node_that_has_not_reported_is_waited_for():
    # Found on a real cluster: with no mirror pods, one node's report used to mean "installed on all 1".
    summary = aggregate([lease("cp-1")], [], DESIRED, nodes=["cp-1", "cp-2"])
    assert [n["name"] for n in summary.nodes] == ["cp-1", "cp-2"]
    assert summary.nodes[1]["message"] == "no report from the policy installer on this node"
    assert summary.condition["status"] == "False" and summary.condition["reason"] == "Installing"
    assert summary.condition["message"] == "policy aaaaaaaaaaaa installed on 1 of 2 node(s); waiting for cp-2"
    both = aggregate([lease("cp-1"), lease("cp-2")], [], DESIRED, nodes=["cp-1", "cp-2"])
    assert both.condition["status"] == "True"


def test_known_nodes_without_any_report_yet_are_no_reports():
    summary = aggregate([], [], DESIRED, nodes=["cp-1"])
    assert [n["name"] for n in summary.nodes] == ["cp-1"]
    assert (summary.condition["status"], summary.condition["reason"]) == ("Unknown", "NoReports")


def test_an_install_error_makes_the_condition_false_with_the_node_and_reason():
    summary = aggregate([lease("cp-1"), lease("cp-2", hash_=OLD, error="/etc/kaudit/policy/policy.yaml: invalid policy")],
                        [], DESIRED)
    assert summary.condition["status"] == "False" and summary.condition["reason"] == "InstallFailed"
    assert summary.condition["message"].startswith("node cp-2: /etc/kaudit/policy/policy.yaml: invalid policy")
    assert summary.nodes[1]["message"].startswith("install failed:")


def test_no_mirror_pods_leaves_the_restart_state_unknown_but_the_policy_installed():
    summary = aggregate([lease("cp-1")], [], DESIRED)
    assert summary.nodes[0]["restartRequired"] == "unknown"
    assert "apiServerStartedAt" not in summary.nodes[0]
    assert summary.condition["status"] == "True" and "restart state unknown on cp-1" in summary.condition["message"]


def test_nothing_reported_yet_is_unknown():
    summary = aggregate([], [], DESIRED)
    assert summary.nodes == []
    assert (summary.condition["status"], summary.condition["reason"]) == ("Unknown", "NoReports")
    assert aggregate([lease("cp-1")], [], "").condition["reason"] == "NoPolicy"


def test_a_stale_report_is_flagged_in_the_node_message():
    old_report = lease("cp-1", renewed=T0, lease_seconds=180)
    fresh = aggregate([old_report], [], DESIRED, now=T0 + timedelta(seconds=100)).nodes[0]["message"]
    stale = aggregate([old_report], [], DESIRED, now=T0 + timedelta(seconds=600)).nodes[0]["message"]
    assert "stale" not in fresh and "stale" in stale


def test_a_crash_looping_apiserver_is_said_so():
    summary = aggregate([lease("cp-1")], [apiserver_pod("cp-1", None, waiting="CrashLoopBackOff")], DESIRED)
    assert summary.nodes[0]["restartRequired"] == "unknown"
    assert "not running (CrashLoopBackOff)" in summary.nodes[0]["message"]


def test_of_two_apiserver_pods_on_a_node_the_running_latest_counts():
    pods = [apiserver_pod("cp-1", "2026-11-20T08:00:00Z"), apiserver_pod("cp-1", "2026-11-22T12:10:00Z"),
            apiserver_pod("cp-1", None)]
    assert apiservers_by_node(pods)["cp-1"].started_at == parse_time("2026-11-22T12:10:00Z")
