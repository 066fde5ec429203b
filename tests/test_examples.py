"""The examples: valid against the CRD's schema, accepted by the spec model, renderable."""

from __future__ import annotations

import copy

import pytest
import yaml

from kaudit.api import parse_collection
from kaudit.render import render
from render_support import CRD_PATH, DATADOG_AGENT, EXAMPLES, HELM_DAEMONSET, collection, load_one

jsonschema = pytest.importorskip("jsonschema")

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
EXISTING = {"daemonset.yaml": [HELM_DAEMONSET], "datadogagent.yaml": [DATADOG_AGENT]}


def closed(schema: dict) -> dict:
    """The CRD schema with unknown fields rejected, as the API server's strict field validation
    reports them (jsonschema would otherwise accept any extra key)."""
    schema = copy.deepcopy(schema)

    def visit(node: dict) -> None:
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for sub in (node.get("properties") or {}).values():
            visit(sub)
        if isinstance(node.get("items"), dict):
            visit(node["items"])

    visit(schema)
    return schema


SCHEMA = closed(yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_there_is_one_example_per_agent_mode():
    modes = {(load_one(p).get("spec") or {}).get("agent", {}).get("mode", "Managed") for p in EXAMPLE_FILES}
    assert {p.name for p in EXAMPLE_FILES} >= {"managed.yaml", "daemonset.yaml", "datadogagent.yaml", "policy-only.yaml"}
    assert modes == {"Managed", "DaemonSet", "DatadogAgent", "None"}


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_is_commented_and_valid_against_the_crd_schema(path):
    text = path.read_text()
    assert text.lstrip().startswith("#"), "examples explain themselves"
    jsonschema.validate(yaml.safe_load(text), SCHEMA)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_renders(path):
    resource = load_one(path)
    parse_collection(resource)
    existing = [load_one(p) for p in EXISTING.get(path.name, [])]
    rendered = render(resource, existing=existing)
    assert rendered.objects and rendered.api_server_flags


def test_schema_check_catches_a_misspelt_field():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(collection({"agent": {"mdoe": "Managed"}}), SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(collection({"agent": {"mode": "Foo"}}), SCHEMA)


def test_sample_helm_daemon_set_is_a_valid_daemon_set():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(load_one(HELM_DAEMONSET), "1.33", strict=True)
