"""The Argo CD health check for AuditCollection, run in a real Lua 5.1 (the dialect Argo CD embeds)."""

from __future__ import annotations

import re
from pathlib import Path

import lupa.lua51 as lupa_lua51  # a test dependency: missing, the tests fail rather than skip
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "docs" / "argocd-health.lua"
GITOPS_DOC = REPO / "docs" / "gitops.md"


def to_lua(lua, value):
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])  # 1-based, as ipairs expects
    return value


def health(obj: dict) -> tuple[str, str]:
    """Run the script the way Argo CD does: a global `obj`, the script's return value is the health."""
    lua = lupa_lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute(SCRIPT.read_text())
    return result["status"], result["message"]


def collection(generation=2, observed=2, conditions=None, status=True) -> dict:
    obj = {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection",
           "metadata": {"name": "cluster", "generation": generation}}
    if status:
        obj["status"] = {"observedGeneration": observed, "conditions": conditions or []}
    return obj


def condition(type_, status, reason, message="", generation=2) -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"}


def test_ready_is_healthy():
    obj = collection(conditions=[
        condition("PolicyValid", "True", "Valid"),
        condition("Ready", "True", "Reconciled", "The audit policy and the agent configuration are in place."),
    ])
    assert health(obj) == ("Healthy", "Reconciled: The audit policy and the agent configuration are in place.")


def test_no_status_yet_is_progressing():
    status, message = health(collection(status=False))
    assert status == "Progressing"
    assert "operator" in message


def test_observed_generation_behind_is_progressing_even_if_ready():
    # A Ready=True written for generation 1 says nothing about generation 2 (kstatus rule).
    obj = collection(generation=2, observed=1, conditions=[condition("Ready", "True", "Reconciled", generation=1)])
    assert health(obj) == ("Progressing", "Waiting for the operator to observe generation 2")


def test_stale_ready_condition_is_progressing():
    obj = collection(generation=3, observed=3, conditions=[condition("Ready", "True", "Reconciled", generation=2)])
    assert health(obj)[0] == "Progressing"


def test_missing_ready_condition_is_progressing():
    obj = collection(conditions=[condition("PolicyValid", "True", "Valid")])
    assert health(obj)[0] == "Progressing"


def test_ready_unknown_is_progressing():
    obj = collection(conditions=[condition("Ready", "Unknown", "Reconciling", "first pass")])
    assert health(obj) == ("Progressing", "Reconciling: first pass")


@pytest.mark.parametrize("reason", ["Installing", "NoReports"])  # kaudit.reconcile.status.PROGRESSING_REASONS
def test_ready_false_while_converging_is_progressing(reason):
    obj = collection(conditions=[condition("Ready", "False", reason, "2 of 3 control-plane nodes done")])
    assert health(obj) == ("Progressing", f"{reason}: 2 of 3 control-plane nodes done")


@pytest.mark.parametrize("reason, message", [
    # Reasons the operator writes for refusals (operator/kaudit/reconcile): each needs the user.
    ("InvalidPolicy", "spec.policy.rules[2].level: Unsupported value"),
    ("Conflict", "AuditCollection other is already active"),
    ("TargetNotFound", "DaemonSet datadog/datadog-agent not found"),
    ("NotSchedulable", "the agent tolerates no control-plane taint"),
])
def test_ready_false_for_a_refusal_is_degraded(reason, message):
    obj = collection(conditions=[condition("PolicyValid", "False", reason, message),
                                 condition("Ready", "False", reason, message)])
    assert health(obj) == ("Degraded", f"{reason}: {message}")


def test_conditions_without_observed_generation_are_still_read():
    obj = collection(conditions=[{"type": "Ready", "status": "True", "reason": "Reconciled", "message": ""}])
    assert health(obj) == ("Healthy", "Reconciled")


def test_gitops_doc_embeds_the_tested_script_verbatim():
    # The doc shows the argocd-cm snippet; it must be this very script, indented under the key.
    doc = GITOPS_DOC.read_text()
    key = "resource.customizations.health.kaudit.dev_AuditCollection: |"
    assert key in doc
    block = doc.split(key, 1)[1].split("```", 1)[0]
    indent = re.match(r"\n( +)", block).group(1)
    embedded = "\n".join(line[len(indent):] for line in block.strip("\n").splitlines())
    assert embedded.strip() == SCRIPT.read_text().strip()


def test_flux_expressions_use_the_same_converging_reasons_as_the_lua_check():
    lua_table = SCRIPT.read_text().split("local converging = {", 1)[1].split("}", 1)[0]
    lua_reasons = set(re.findall(r"(\w+) = true", lua_table))
    failed_expr = GITOPS_DOC.read_text().split("failed: >-", 1)[1].split("current:", 1)[0]
    cel_reasons = set(re.findall(r"'(\w+)'", failed_expr.split("c.reason in [", 1)[1].split("]", 1)[0]))
    assert lua_reasons and cel_reasons == lua_reasons
