"""The operator's detection gate (kaudit.reconcile.detection): rules from the pack and a ConfigMap,
the assessment cached per policy and rules."""

from __future__ import annotations

import asyncio
import json

from kaudit.api.spec import parse_collection
from kaudit.detect.pack import PACK
from kaudit.policy import content_hash
from kaudit.reconcile.detection import DetectionGate

PODS_METADATA = ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
                 "- level: Metadata\n  resources: [{group: '', resources: [pods]}]\n"
                 "- level: RequestResponse\n")


class Lister:
    def __init__(self, config_maps):
        self.config_maps, self.calls = config_maps, 0

    async def list(self, resource, *, namespace=None, label_selector=None):
        self.calls += 1
        assert (resource.plural, namespace) == ("configmaps", "kaudit-system")
        return self.config_maps


def collection(detection):
    return parse_collection({"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection",
                             "metadata": {"name": "cluster"}, "spec": {"detection": detection}}).detection


def run(gate, spec, text=PODS_METADATA):
    return asyncio.run(gate.assess(spec, text, content_hash(text), content_hash(text)[:12]))


def test_no_detection_no_assessment():
    assert run(DetectionGate(Lister([]), "kaudit-system"), None) is None


def test_user_rules_from_the_config_map_and_a_cached_verdict(monkeypatch):
    mine = dict(PACK[4].rule, name="mine: host network")  # a body rule on pods
    lister = Lister([{"metadata": {"name": "other"}, "data": {}},
                     {"metadata": {"name": "team-rules"}, "data": {"rules.json": json.dumps([mine])}}])
    gate = DetectionGate(lister, "kaudit-system")
    body = collection({"mode": "Refuse", "packRules": ["kaudit-pod-exec"], "configMapRef": {"name": "team-rules"}})
    first = run(gate, body)
    assert (first.status, first.reason, first.refuse) == ("False", "BlindingPolicyRefused", True)
    assert "mine: host network: rule 0 (resources=[pods]) logs these requests at Metadata" in first.message
    assert "shell opened" not in first.message  # the exec rule needs Metadata only: it fires
    import kaudit.reconcile.detection as module

    monkeypatch.setattr(module, "_assess_text", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert run(gate, body) == first and lister.calls == 2  # the rules are read again, the verdict is not


def test_a_missing_config_map_is_reported_not_refused():
    gate = DetectionGate(Lister([]), "kaudit-system")
    result = run(gate, collection({"mode": "Refuse", "configMapRef": {"name": "gone"}}))
    assert (result.status, result.reason, result.refuse) == ("False", "RulesInvalid", False)
    assert result.message == "ConfigMap kaudit-system/gone: not found (spec.detection.configMapRef)"
