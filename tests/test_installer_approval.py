"""The installer installs only the policy its AuditCollection approves (status.policy.fullHash).

The AuditCollection is read through a fake ``fetch`` (name -> object); the real GET against a real
kube-apiserver is in tests/realcluster/test_tamper.py.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from installer_support import digest, leftovers, policy_text
from kaudit.installer.approval import Approval, ApprovalUnavailable, NotApproved, candidate_hash
from kaudit.installer.follow import Outcome, Refusal, follow, policy_validator, run_round
from kaudit.installer.lease import Identity
from kaudit.installer.reports import aggregate
from kaudit.installer.service import Reporter
from kaudit.installer.writer import install, previous_path
from kaudit.policy import PolicyOptions, compose_policy
from test_installer_reports import FakeSender, lease

APPROVED, LOWERED = policy_text("Metadata"), policy_text("None")
T0 = datetime(2026, 12, 1, 10, 0, 0, tzinfo=timezone.utc)


def collection(full_hash: str | None) -> dict:
    status = {"policy": {"fullHash": full_hash}} if full_hash is not None else {}
    return {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": "cluster"},
            "status": status}


class Cluster:
    """The AuditCollection as the API serves it, and every read the installer made."""

    def __init__(self, body: dict | None):
        self.body = body
        self.reads: list[str] = []
        self.error: Exception | None = None

    def fetch(self, name: str) -> dict | None:
        self.reads.append(name)
        if self.error is not None:
            raise self.error
        return self.body


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """A policy directory with the approved policy installed and an older one kept as .previous."""
    target = tmp_path / "audit-policies" / "policy.yaml"
    target.parent.mkdir()
    previous_path(target).write_text(policy_text("Request"))
    target.write_text(APPROVED)
    os.chmod(target, 0o600)
    return target


def snapshot(target: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(target.parent.iterdir())}


def validator(target: Path):
    return policy_validator(target.parent / "source.yaml")


def test_the_published_hash_is_the_candidates_hash():
    # What the operator writes to status.policy.fullHash (PolicyDocument.hash) is what the
    # installer computes from the file the ConfigMap carries.
    document = compose_policy(PolicyOptions())
    assert candidate_hash(document.text.encode()) == document.hash
    assert candidate_hash(b"\xff\xfe not utf-8") != document.hash


@pytest.mark.parametrize("live, reason", [
    (collection(digest(APPROVED)), "not the policy AuditCollection cluster approves"),
    (None, "AuditCollection cluster does not exist"),
    (collection(None), "approves no policy yet"),
    (collection(""), "approves no policy yet"),
])
def test_an_unapproved_candidate_is_refused_and_nothing_on_the_node_changes(node, live, reason):
    before = snapshot(node)
    cluster = Cluster(live)
    with pytest.raises(NotApproved) as info:
        install(LOWERED.encode(), node, validator(node), Approval("cluster", cluster.fetch).check)
    assert info.value.candidate_hash == digest(LOWERED) and reason in info.value.reason
    assert snapshot(node) == before  # the installed file and .previous byte for byte, no temporaries
    assert leftovers(node.parent, node.name) == []
    assert cluster.reads == ["cluster"]


def test_the_approved_candidate_is_installed(node):
    cluster = Cluster(collection(digest(LOWERED)))  # the AuditCollection now approves it
    result = install(LOWERED.encode(), node, validator(node), Approval("cluster", cluster.fetch).check)
    assert result.changed and node.read_text() == LOWERED and previous_path(node).read_text() == APPROVED


def test_what_is_already_installed_needs_no_read(node):
    cluster = Cluster(collection("0" * 64))
    result = install(APPROVED.encode(), node, validator(node), Approval("cluster", cluster.fetch).check)
    assert not result.changed and cluster.reads == []


def test_an_unreadable_collection_installs_nothing_and_is_an_error_not_a_refusal(node):
    before = snapshot(node)
    cluster = Cluster(collection(digest(LOWERED)))
    cluster.error = ConnectionError("connection refused\nmore")
    outcome = run_round(LOWERED.encode(), node, validator(node), Approval("cluster", cluster.fetch).check)
    assert outcome.refused is None and outcome.approval_unread and outcome.unapproved
    assert outcome.error == ("cannot read AuditCollection cluster to check the policy's approval: "
                             "connection refused")
    assert snapshot(node) == before
    with pytest.raises(ApprovalUnavailable):
        install(LOWERED.encode(), node, validator(node), Approval("cluster", cluster.fetch).check)


class CountingStop:
    """A stop event that records how long each round waits, and stops after ``rounds`` rounds."""

    def __init__(self, rounds: int, on_wait=None):
        self.waits: list[float] = []
        self.rounds = rounds
        self.on_wait = on_wait or (lambda index: None)

    def is_set(self) -> bool:
        return len(self.waits) >= self.rounds

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        self.on_wait(len(self.waits))
        return self.is_set()


def test_following_refuses_then_installs_as_soon_as_the_approval_lands(node, tmp_path):
    # The ConfigMap (source) carries a new policy a moment before the status approves it: the
    # installer asks again after short delays, not after its whole interval.
    source = tmp_path / "source.yaml"
    source.write_text(LOWERED)
    cluster = Cluster(collection(digest(APPROVED)))
    outcomes: list[Outcome] = []

    def approve_at_third_wait(index: int) -> None:
        if index == 3:
            cluster.body = collection(digest(LOWERED))

    stop = CountingStop(rounds=5, on_wait=approve_at_third_wait)
    follow(source, node, policy_validator(source), interval=30.0, on_outcome=outcomes.append, stop=stop,
           approve=Approval("cluster", cluster.fetch).check)
    assert [o.refused is not None for o in outcomes] == [True, True, True, False]
    assert outcomes[-1].result is not None and outcomes[-1].result.changed and node.read_text() == LOWERED
    assert stop.waits == [0.25, 0.25, 0.5, 30.0, 30.0]  # short retries while refused, then the interval
    assert len(cluster.reads) == 4  # one read per attempt; none once installed


def test_following_a_lasting_refusal_backs_off_to_the_interval(node, tmp_path):
    source = tmp_path / "source.yaml"
    source.write_text(LOWERED)
    stop = CountingStop(rounds=8)
    follow(source, node, policy_validator(source), interval=1.5, on_outcome=lambda o: None, stop=stop,
           approve=Approval("cluster", Cluster(collection(digest(APPROVED))).fetch).check)
    assert stop.waits == [0.25, 0.25, 0.5, 1.0, 1.5, 1.5, 1.5, 1.5]
    assert node.read_text() == APPROVED


def test_the_report_names_the_refusal_keeps_the_installed_hash_and_clears_when_installed():
    now = [T0]
    sender = FakeSender()
    reporter = Reporter(sender, Identity("cluster", "cp-1", "kaudit-system"), Path("/p/policy.yaml"),
                        heartbeat=60, clock=lambda: now[0])
    from kaudit.installer.writer import InstallResult

    reporter.record(Outcome(result=InstallResult(Path("/p/policy.yaml"), digest(APPROVED), changed=True,
                                                 installed_at=T0)))
    refusal = Refusal(digest(LOWERED), "not the policy AuditCollection cluster approves")
    now[0] = T0 + timedelta(seconds=5)
    reporter.record(Outcome(refused=refusal))
    now[0] = T0 + timedelta(seconds=9)
    reporter.record(Outcome(refused=refusal))  # the same candidate, still refused: same time
    annotations = sender.bodies[-1]["metadata"]["annotations"]
    assert annotations["kaudit.dev/installed-hash"] == digest(APPROVED)
    assert annotations["kaudit.dev/refused-hash"] == digest(LOWERED)
    assert annotations["kaudit.dev/refused-reason"] == refusal.reason
    assert annotations["kaudit.dev/refused-at"] == "2026-12-01T10:00:05.000000Z"
    assert annotations["kaudit.dev/error"] == ""
    # What the operator makes of it: PolicyRefused, naming the node, the refused and the kept hash.
    summary = aggregate([sender.bodies[-1]], [], digest(APPROVED))
    assert summary.condition["reason"] == "PolicyRefused" and summary.condition["status"] == "False"
    assert summary.condition["message"] == (
        f"node cp-1 refused policy {digest(LOWERED)[:12]} since 2026-12-01T10:00:05Z: {refusal.reason}; "
        f"kept {digest(APPROVED)[:12]} installed")
    assert summary.nodes[0]["refusedHash"] == digest(LOWERED)
    reporter.record(Outcome(result=InstallResult(Path("/p/policy.yaml"), digest(APPROVED), changed=False,
                                                 installed_at=T0)))
    assert sender.bodies[-1]["metadata"]["annotations"]["kaudit.dev/refused-hash"] == ""


def test_a_refusal_comes_before_an_install_failure_in_the_condition():
    leases = [lease("cp-1", error="disk full"),
              {**lease("cp-2"), "metadata": {**lease("cp-2")["metadata"], "annotations": {
                  **lease("cp-2")["metadata"]["annotations"], "kaudit.dev/refused-hash": "a" * 64,
                  "kaudit.dev/refused-reason": "why"}}}]
    condition = aggregate(leases, [], lease("cp-1")["metadata"]["annotations"]["kaudit.dev/installed-hash"]).condition
    assert condition["reason"] == "PolicyRefused" and condition["message"].startswith("node cp-2 refused policy aaaaaaaaaaaa")



def test_a_refusal_that_ends_without_a_write_is_reported_as_ended(node, tmp_path):
    # The source is put right (the approved policy, already installed): nothing is written, and
    # the outcome still reaches the report, so the refusal is cleared there.
    source = tmp_path / "source.yaml"
    source.write_text(LOWERED)

    def put_right(index: int) -> None:
        if index == 2:
            source.write_text(APPROVED)

    outcomes: list[Outcome] = []
    follow(source, node, policy_validator(source), interval=30.0, on_outcome=outcomes.append,
           stop=CountingStop(rounds=4, on_wait=put_right),
           approve=Approval("cluster", Cluster(collection(digest(APPROVED))).fetch).check)
    assert [(o.refused is not None, o.result is not None and not o.result.changed) for o in outcomes] == [
        (True, False), (True, False), (False, True)]
