"""spec.detection in the Reconciler (in-memory storage): the DetectionCoverage condition, the
refusal of a policy that blinds a required rule (nothing written, the last good policy kept), and
Report mode, in which the condition never decides Ready."""

from __future__ import annotations

import copy
import json

import pytest

from kaudit.detect.pack import pack_entry
from kaudit.reconcile.service import OperatorConfig, Reconciler
from test_reconciler import MemoryStorage, collection, conditions, live

HOST_NETWORK = pack_entry("kaudit: pod created on the node's network").rule["name"]
# Everything at Metadata, nothing else: a pod create has no body, the host-network rule reads one.
ALL_METADATA = {"profile": "None", "auditKaudit": False, "rules": [{"level": "Metadata"}]}
TEAM_RULE = {"name": "team: secrets deleted", "queries": [{"query": "@objectRef.resource:secrets @http.method:delete"}],
             "cases": [{"status": "high", "condition": "a > 0"}]}


def with_detection(policy, mode, generation=1):
    body = collection(agent={"mode": "None"})
    body["metadata"]["generation"] = generation
    body["spec"]["policy"] = policy
    body["spec"]["detection"] = {"mode": mode, "packRules": ["kaudit-host-network-pod"],
                                 "configMapRef": {"name": "team-rules"}}
    return body


def team_rules():
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "team-rules", "namespace": "ops"},
            "data": {"rules.json": json.dumps([TEAM_RULE])}}


def update(storage, body):
    stored = storage.objects[("auditcollections", None, "cluster")]
    stored["metadata"]["generation"] = body["metadata"]["generation"]
    stored["spec"] = copy.deepcopy(body["spec"])


@pytest.mark.parametrize("mode", ["Refuse", "Report"])
async def test_coverage_then_a_blinding_change(mode):
    storage = MemoryStorage(with_detection({"profile": "WriteRequestBodies"}, mode), team_rules())
    reconciler = Reconciler(storage, OperatorConfig(namespace="ops"), clock=lambda: "2026-01-01T00:00:00Z")
    first = await reconciler.reconcile(live(storage))
    coverage = conditions(storage)["DetectionCoverage"]
    assert first.ready and (coverage["status"], coverage["reason"], coverage["observedGeneration"]) == \
        ("True", "RulesCovered", 1)
    assert coverage["message"].startswith("all 2 required rule(s) fire under policy ")
    policy_cm = ("configmaps", "ops", "kaudit-cluster-policy")
    good, good_status = copy.deepcopy(storage.objects[policy_cm]), \
        copy.deepcopy(storage.objects[("auditcollections", None, "cluster")]["status"]["policy"])

    update(storage, with_detection(ALL_METADATA, mode, generation=2))
    before = len(storage.writes)
    outcome = await reconciler.reconcile(live(storage))
    coverage = conditions(storage)["DetectionCoverage"]
    assert coverage["observedGeneration"] == 2 and coverage["status"] == "False"
    assert f"{HOST_NETWORK}: rule 0 (everything) logs these requests at Metadata; this detection reads " \
           f"@requestObject.spec.hostNetwork (needs Request)" in coverage["message"]
    assert "team: secrets deleted" not in coverage["message"]  # it reads no body: it fires at Metadata
    status_policy = storage.objects[("auditcollections", None, "cluster")]["status"]["policy"]
    if mode == "Refuse":
        assert coverage["reason"] == "BlindingPolicyRefused" and not outcome.ready
        assert outcome.reason == "BlindingPolicyRefused"
        assert conditions(storage)["PolicyValid"]["reason"] == "BlindingPolicyRefused"
        assert [kind for kind, _ in storage.writes[before:]] == ["patch status"]
        assert storage.objects[policy_cm] == good and status_policy == good_status
    else:
        assert coverage["reason"] == "RulesBlind" and outcome.ready  # reported, not enforced
        assert coverage["message"].startswith("1 of 2 required rule(s) blind under policy ")
        assert storage.objects[policy_cm] != good and status_policy != good_status


async def test_without_detection_there_is_no_condition():
    body = collection(agent={"mode": "None"})
    storage = MemoryStorage(body)
    await Reconciler(storage, OperatorConfig(namespace="ops")).reconcile(live(storage))
    assert "DetectionCoverage" not in conditions(storage)


async def test_unreadable_rules_are_reported_and_refuse_nothing():
    body = with_detection(ALL_METADATA, "Refuse")
    body["spec"]["detection"]["packRules"] = ["kaudit-host-network"]
    storage = MemoryStorage(body)  # and no ConfigMap
    outcome = await Reconciler(storage, OperatorConfig(namespace="ops")).reconcile(live(storage))
    coverage = conditions(storage)["DetectionCoverage"]
    assert outcome.ready and (coverage["status"], coverage["reason"]) == ("False", "RulesInvalid")
    assert coverage["message"].startswith("spec.detection.packRules[0]: not a rule of kaudit's pack: "
                                          "'kaudit-host-network'; did you mean \"kaudit-host-network-pod\"?")


async def test_the_operator_keeps_the_required_rules_in_datadog():
    """kaudit run --detection-sync: the Reconciler syncs the required rules (through the official client,
    to the loopback server that checks every body with the client's models), at most every interval
    while they are unchanged, and again at once when they change."""
    from datadog_rules_server import FakeDatadog, Server

    from kaudit.detect.sync import Credentials
    from kaudit.reconcile.detection import SyncSettings

    with Server(FakeDatadog()) as datadog:
        now = [1000.0]
        settings = SyncSettings(Credentials(datadog.api_key, datadog.app_key), cluster="prod-eu", url=datadog.url)
        storage = MemoryStorage(with_detection({"profile": "WriteRequestBodies"}, "Report"), team_rules())
        # status_hold=0: each sync's result is written by the reconcile that made it (the operator would
        # write a message-only change with the next reconcile, within STATUS_HOLD; here there is none).
        reconciler = Reconciler(storage, OperatorConfig(namespace="ops", detection_sync=settings),
                                clock=lambda: "2026-01-01T00:00:00Z", status_hold=0.0)
        reconciler._rule_sync.clock = lambda: now[0]
        outcome = await reconciler.reconcile(live(storage))
        synced = conditions(storage)["DetectionRulesSynced"]
        assert outcome.ready and (synced["status"], synced["reason"], synced["message"]) == \
            ("True", "RulesSynced", "owner prod-eu: 2 created")
        assert sorted(r["name"] for r in datadog.rules.values()) == \
            sorted([f"{HOST_NETWORK} [prod-eu]", "team: secrets deleted [prod-eu]"])
        assert datadog.violations == []

        datadog.requests.clear()
        now[0] += 60
        await reconciler.reconcile(live(storage))
        assert datadog.requests == []  # unchanged rules, within the interval: Datadog is not asked
        now[0] += 300
        rule = next(r for r in datadog.rules.values() if r["name"].startswith("team"))
        rule["isEnabled"] = False  # drift in Datadog, put back on the next sync
        await reconciler.reconcile(live(storage))
        assert conditions(storage)["DetectionRulesSynced"]["message"] == "owner prod-eu: 1 repaired, 1 unchanged"
        assert rule["isEnabled"] is True

        update(storage, with_detection({"profile": "WriteRequestBodies"}, "Report", generation=2))
        storage.objects[("auditcollections", None, "cluster")]["spec"]["detection"]["packRules"] = ["kaudit-pod-exec"]
        await reconciler.reconcile(live(storage))  # other rules: synced at once
        assert conditions(storage)["DetectionRulesSynced"]["message"] == \
            "owner prod-eu: 1 created, 1 deleted, 1 unchanged"

        reconciler._rule_sync.settings = SyncSettings(Credentials("wrong", "keys"), cluster="prod-eu", url=datadog.url)
        reconciler._rule_sync._last = None
        outcome = await reconciler.reconcile(live(storage))
        failed = conditions(storage)["DetectionRulesSynced"]
        assert (failed["status"], failed["reason"]) == ("False", "SyncFailed") and outcome.ready
        assert failed["message"] == "Datadog answered 403 Forbidden to list_security_monitoring_rules"
