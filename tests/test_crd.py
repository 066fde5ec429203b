"""The AuditCollection CRD: structural, documented, and in step with the spec model."""

from __future__ import annotations

import copy

import pytest
import yaml

from kaudit.api import parse_collection
from kaudit.api.spec import AGENT_MODES, PROFILES, STAGES
from render_support import CRD_PATH, collection

CRD = yaml.safe_load(CRD_PATH.read_text())
[VERSION] = CRD["spec"]["versions"]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


def walk(schema: dict, path: str = ""):
    yield path or "<root>", schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def test_identity_matches_the_shared_decisions():
    assert CRD["metadata"]["name"] == "auditcollections.kaudit.dev"
    assert CRD["spec"]["group"] == "kaudit.dev"
    assert CRD["spec"]["scope"] == "Cluster"
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "AuditCollection", "auditcollections", ["ac"], ["kaudit"])
    assert VERSION["name"] == "v1alpha1" and VERSION["served"] and VERSION["storage"]
    assert VERSION["subresources"] == {"status": {}}


def test_printer_columns():
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert columns == {
        "Profile": ".spec.policy.profile",
        "Agent": ".spec.agent.mode",
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "Policy": ".status.policy.hash",
        "Age": ".metadata.creationTimestamp",
    }


def test_schema_is_structural_and_every_field_is_described():
    # Structural schema rules (apiextensions): every node has a type, except nodes marked
    # x-kubernetes-int-or-string or x-kubernetes-preserve-unknown-fields.
    for path, node in walk(SCHEMA):
        if path == ".metadata":
            # kube-apiserver refuses a CRD that says anything of metadata but its type (metadata is
            # implicitly specified): no description there.
            assert node == {"type": "object"}, node
            continue
        assert node.get("description", "").strip(), f"{path} has no description"
        if not (node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")):
            assert node.get("type") in {"object", "array", "string", "integer", "boolean", "number"}, path
        if node.get("type") == "array":
            assert "items" in node, path


def test_enums_match_the_spec_model():
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert tuple(spec["agent"]["properties"]["mode"]["enum"]) == AGENT_MODES
    assert tuple(spec["policy"]["properties"]["profile"]["enum"]) == PROFILES
    assert tuple(spec["policy"]["properties"]["omitStages"]["items"]["enum"]) == STAGES
    # Custom rules: the API server refuses what kube-apiserver would refuse in these two fields.
    from kaudit.policy.model import LEVELS, STAGES as POLICY_STAGES

    rule = spec["policy"]["properties"]["rules"]["items"]["properties"]
    assert tuple(rule["level"]["enum"]) == LEVELS
    assert tuple(rule["omitStages"]["items"]["enum"]) == POLICY_STAGES == STAGES


def apply_defaults(value, schema):
    """apiextensions defaulting, enough for this schema: absent properties with a default get it."""
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                apply_defaults(value[name], sub)
    return value


def test_crd_defaults_are_the_spec_models_defaults():
    resource = collection()
    del resource["spec"]
    defaulted = apply_defaults(copy.deepcopy(resource), SCHEMA)
    assert defaulted["spec"]["agent"]["mode"] == "Managed"
    assert parse_collection(defaulted) == parse_collection(resource)
    # Sub-objects appear as soon as a user writes one: their defaults must agree too.
    partial = collection({"agent": {"daemonSet": {}, "datadogAgent": {}, "managed": {"apiKeySecretRef": {}}}})
    assert parse_collection(apply_defaults(copy.deepcopy(partial), SCHEMA)) == parse_collection(partial)


def test_defaults_satisfy_their_own_schema():
    jsonschema = pytest.importorskip("jsonschema")
    for path, node in walk(SCHEMA):
        if "default" in node:
            jsonschema.validate(node["default"], {k: v for k, v in node.items() if k != "default"})


def test_crd_is_a_valid_custom_resource_definition_for_every_supported_version():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for minor in range(29, 38):
        kubernetes_validate.validate(CRD, f"1.{minor}", strict=True)


def test_status_the_operator_writes_validates_against_the_status_schema():
    # Built from the operator's and installer's own status pieces, so a field they add without a
    # schema entry (which the API server would prune) fails here.
    jsonschema = pytest.importorskip("jsonschema")
    from datetime import datetime, timezone

    from kaudit.installer.reports import ApiServer, NodeReport, installed_condition, node_entries
    from kaudit.reconcile.agent import AgentFigures
    from kaudit.conditions import Condition
    from kaudit.reconcile.status import render_conditions, summarise
    from kaudit.render import render

    rendered = render(collection())
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    nodes = node_entries(
        [NodeReport("cp-1", rendered.policy.hash, started), NodeReport("cp-2", "0" * 64, started)],
        {"cp-1": ApiServer("cp-1", started), "cp-3": ApiServer("cp-3", None)}, rendered.policy.hash)
    assert {type(n["restartRequired"]) for n in nodes} >= {bool, str}  # true/false and "unknown"
    installed = installed_condition(nodes, {}, rendered.policy.hash)
    parts = [Condition("PolicyValid", "True", "Valid", "ok"), Condition("AgentConfigured", "False", "Rollout", "1/2"),
             Condition(installed["type"], installed["status"], installed["reason"], installed["message"])]
    status = {
        "observedGeneration": 4,
        "conditions": render_conditions([summarise(parts), *parts], previous=[], generation=4,
                                        now="2026-01-02T03:04:05Z"),
        "policy": {"hash": rendered.policy.hash[:12], "fullHash": rendered.policy.hash,
                   "ruleCount": rendered.policy.rule_count, "profile": "Default"},
        "apiServerFlags": list(rendered.api_server_flags),
        "warnings": [str(w) for w in rendered.warnings] or ["spec.policy.rules[0].level: example"],
        "nextSteps": list(rendered.next_steps),
        "agent": AgentFigures(desired=2, ready=1, control_plane_nodes=3, message="1 of 2 ready").as_status(),
        "nodes": nodes,
    }
    from operator_support import closed_schema

    jsonschema.validate(status, closed_schema(SCHEMA["properties"]["status"]))
    assert {c["type"] for c in status["conditions"]} == {"Ready", "PolicyValid", "AgentConfigured", "PolicyInstalled"}
