"""spec.detection on the real control plane: the DetectionCoverage condition and a refusal.

kaudit is installed as the chart installs it and ``kaudit run`` runs under the chart's
ServiceAccount. A collection requires the pack's host-network rule (it reads
``@requestObject.spec.hostNetwork``, so pod creates must be logged at Request or above) and the
exec rule, plus one rule of the user's own from a ConfigMap in the operator namespace:

* under WriteRequestBodies (pod creates at Request) the condition is True, ``RulesCovered``,
  for the generation the collection has;
* a change to a policy that logs everything at Metadata (profile None with one custom rule,
  no self-audit rules) would blind the host-network rule: in Refuse mode it is refused, the
  policy ConfigMap keeps the last good policy byte for byte, status.policy keeps its hash, and
  the condition names the rule, the deciding policy rule and its level;
* the same change in Report mode goes through, and the condition says the rule is blind.
"""

from __future__ import annotations

import json

import kaudit_harness as kh
import pytest

from kaudit.detect.pack import pack_entry

NAME = "detection"
NS = "kaudit-system"
POLICY_CM = f"kaudit-{NAME}-policy"
USER_RULES_CM = "detection-team-rules"
HOST_NETWORK = pack_entry("kaudit: pod created on the node's network").rule["name"]
TEAM_RULE = {"name": "team: secrets deleted", "queries": [{"query": "@objectRef.resource:secrets @http.method:delete"}],
             "cases": [{"status": "high", "condition": "a > 0"}]}
ALL_METADATA = {"profile": "None", "auditKaudit": False, "rules": [{"level": "Metadata"}]}


def collection(policy: dict, mode: str) -> dict:
    return {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": NAME},
            "spec": {"policy": policy, "apiServer": {"installPolicy": False}, "agent": {"mode": "None"},
                     "detection": {"mode": mode, "packRules": ["kaudit-host-network-pod", "kaudit-pod-exec"],
                                   "configMapRef": {"name": USER_RULES_CM}}}}


def generation(plane) -> int:
    return plane.get("auditcollection", NAME)["metadata"]["generation"]


@pytest.fixture(scope="module")
def operator(control_plane, kaudit_installed):
    plane = control_plane
    plane.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": USER_RULES_CM, "namespace": NS},
                 "data": {"rules.json": json.dumps([TEAM_RULE])}})
    process = kaudit_installed.start_chart_operator(name="operator-detection")
    try:
        yield plane
    finally:
        kh.delete_collection(plane, NAME)
        plane.kubectl("delete", "configmap", "-n", NS, USER_RULES_CM, "--ignore-not-found")
        process.stop()


def test_coverage_condition_and_refusal(operator):
    plane = operator
    plane.apply(collection({"profile": "WriteRequestBodies"}, "Refuse"))
    covered = kh.wait_condition(plane, NAME, "DetectionCoverage", status="True", generation=1, timeout=60)
    assert covered["reason"] == "RulesCovered"
    assert covered["message"].startswith("all 3 required rule(s) fire under policy ")
    good = plane.get("configmap", "-n", NS, POLICY_CM)["data"]
    good_hash = plane.get("auditcollection", NAME)["status"]["policy"]["fullHash"]

    plane.apply(collection(ALL_METADATA, "Refuse"))
    refused = kh.wait_condition(plane, NAME, "DetectionCoverage", status="False", generation=2, timeout=60)
    assert refused["reason"] == "BlindingPolicyRefused"
    assert f"{HOST_NETWORK}: rule 0 (everything) logs these requests at Metadata; this detection reads " \
           f"@requestObject.spec.hostNetwork (needs Request)" in refused["message"]
    assert "refused, the last good policy is kept: it would blind 1 required rule(s)" in refused["message"]
    conditions = kh.conditions(plane, NAME)
    assert (conditions["Ready"]["status"], conditions["PolicyValid"]["reason"]) == ("False", "BlindingPolicyRefused")
    assert plane.get("configmap", "-n", NS, POLICY_CM)["data"] == good
    assert plane.get("auditcollection", NAME)["status"]["policy"]["fullHash"] == good_hash

    plane.apply(collection(ALL_METADATA, "Report"))
    reported = kh.wait_condition(plane, NAME, "DetectionCoverage", status="False", generation=3, timeout=60)
    assert reported["reason"] == "RulesBlind"
    assert reported["message"].startswith("1 of 3 required rule(s) blind under policy ")
    kh.wait_condition(plane, NAME, "Ready", status="True", generation=3, timeout=60)
    assert plane.get("configmap", "-n", NS, POLICY_CM)["data"] != good
