"""DatadogAgent mode against the real DatadogAgent CRD (the Datadog chart's datadog-crds dependency).

The CRD is tests/fixtures/datadog-chart/datadogagents-crd.yaml, rendered by tests/datadog_chart.py
with ``--set crds.datadogAgents=true``. Validation uses its v2alpha1 openAPIV3Schema closed to
unknown fields: the API server would prune a field the CRD lacks without a word, so a misspelt
field in kaudit's patch would silently do nothing.
"""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from datadog_chart import DATADOG_AGENT_CRD
from kaudit.reconcile import plan
from kaudit.render import render
from operator_support import closed_schema
from render_support import (
    apply_merge_patch,
    apply_ssa_merge,
    datadog_agent,
    datadogagent_mode,
    remove_applied,
    without_nulls,
)

[CRD] = [d for d in yaml.safe_load_all(DATADOG_AGENT_CRD.path.read_text()) if d]
[VERSION] = [v for v in CRD["spec"]["versions"] if v["name"] == "v2alpha1"]
SCHEMA = closed_schema(VERSION["schema"]["openAPIV3Schema"])


def schema_errors(obj: dict) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(obj)]


def users_agents() -> dict[str, dict]:
    """The example (own configDataMap, volume, mount, toleration) and one with no overrides at all."""
    bare = datadog_agent()
    del bare["spec"]["override"]
    return {"own-overrides": datadog_agent(), "no-overrides": bare}


def desired_for(live: dict) -> dict:
    [body] = render(datadogagent_mode(), existing=[plan.user_view(live)]).patches
    return plan.stamp(plan.record_replaced_values(plan.record_added_items(body, live), live))


def test_the_crd_is_the_operators_datadogagent():
    assert CRD["metadata"]["name"] == "datadogagents.datadoghq.com"
    assert VERSION["served"] and VERSION["storage"]
    node_agent = VERSION["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["override"][
        "additionalProperties"]["properties"]
    assert {"extraConfd", "volumes", "tolerations", "containers", "annotations"} <= set(node_agent)


@pytest.mark.parametrize("name", ["own-overrides", "no-overrides"])
def test_kaudits_patch_and_the_merged_resource_are_valid_for_the_crd(name):
    live = users_agents()[name]
    assert schema_errors(live) == []  # the user's resource itself is a valid one
    desired = desired_for(live)
    assert schema_errors(desired) == []
    assert schema_errors(apply_ssa_merge(live, desired)) == []


def test_kaudits_additions_merge_with_the_users_own_overrides():
    live = datadog_agent()
    merged = apply_ssa_merge(live, desired_for(live))["spec"]["override"]["nodeAgent"]
    assert set(merged["extraConfd"]["configDataMap"]) == {"http_check.yaml", "kubernetes_audit.yaml"}
    assert "configMap" not in merged["extraConfd"]  # it would make the Operator ignore configDataMap
    assert [v["name"] for v in merged["volumes"]] == ["app-logs", "kaudit-audit-logs"]
    assert [m["mountPath"] for m in merged["containers"]["agent"]["volumeMounts"]] == [
        "/var/log/apps", "/var/log/kubernetes/apiserver"]
    assert merged["tolerations"][0] == live["spec"]["override"]["nodeAgent"]["tolerations"][0]
    assert {t["key"] for t in merged["tolerations"][1:]} == {
        "node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"}


@pytest.mark.parametrize("name", ["own-overrides", "no-overrides"])
def test_hand_back_reproduces_the_users_datadogagent(name):
    live = users_agents()[name]
    desired = desired_for(live)
    patched = apply_ssa_merge(live, desired)
    release = plan.release_of(patched)
    restored = apply_merge_patch(patched, release.restore) if release.restore else patched
    assert plan.restore_values_patch(restored, release.values) is None  # kaudit replaced no value of theirs
    handed_back = remove_applied(restored, desired, live)
    handed_back["metadata"].pop("resourceVersion", None)
    assert without_nulls(handed_back) == live
