"""The operator's condition reasons, and how the GitOps health checks classify them.

``kaudit.reconcile.status`` declares the reason vocabulary once (PROGRESSING_REASONS,
FAILURE_REASONS, NOTICE_REASONS, TRUE_REASONS). These tests check that

* every reason the code can write is in exactly one set — found by reading the source, so a new
  reason added anywhere (a ``Condition(...)``, a ``Refused(...)`` of the renderer, a
  PolicyInstalled reason of the node-report aggregation) fails here until it is classified;
* the Argo CD Lua check (docs/argocd-health.lua, in a real Lua 5.1) and the Flux CEL expressions
  (docs/gitops.md, in a real CEL runtime) give each reason the health the sets say.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import cel  # a test dependency (common-expression-language): missing, the tests fail rather than skip
import pytest

from kaudit.reconcile.status import (FAILURE_REASONS, NOTICE_REASONS, PROGRESSING_REASONS, READY_REASON,
                                     TRUE_REASONS, Condition, summarise)
from test_argocd_health import collection, condition, health

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "operator" / "kaudit"
GITOPS_DOC = REPO / "docs" / "gitops.md"

# Where a reason is a literal argument: Condition(type, status, REASON, message) in the operator,
# Refused(REASON, message) in the renderer, condition(status, REASON, message) in reports.py.
# Platform EKS: AwsError(REASON, message) of kaudit.platforms.eks.aws, replace_reason(error, REASON, message).
REASON_ARGUMENT = {"Condition": 2, "Refused": 0, "condition": 1, "AwsError": 0, "replace_reason": 1}


def written_reasons() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            index = REASON_ARGUMENT.get(name)
            if index is None or len(node.args) <= index:
                continue
            argument = node.args[index]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                found.add(argument.value)
    return found


def test_the_source_scan_finds_reasons_of_every_origin():
    # Guards the scan itself: one reason from each of the three call shapes above.
    assert {"Conflict", "ManagedByDatadogOperator", "Installing"} <= written_reasons()


def test_every_reason_the_operator_writes_is_classified_once():
    sets = {"progressing": PROGRESSING_REASONS, "failure": FAILURE_REASONS, "true": TRUE_REASONS | {READY_REASON}}
    for reason in sorted(written_reasons()):
        homes = [name for name, reasons in sets.items() if reason in reasons]
        assert len(homes) == 1, f"{reason}: classified as {homes or 'nothing'}"
    # No stale entry: every classified reason is still written somewhere (Ready's own reason is
    # written through the READY_REASON constant, not a literal).
    assert (PROGRESSING_REASONS | FAILURE_REASONS | TRUE_REASONS) == written_reasons()


def test_ready_carries_a_restart_notice_and_stays_true():
    conditions = [Condition("PolicyValid", "True", "Valid", "ok"),
                  Condition("PolicyInstalled", "True", "RestartRequired", "restart kube-apiserver on cp-1"),
                  Condition("AgentConfigured", "True", "Applied", "ok")]
    assert summarise(conditions) == Condition("Ready", "True", "RestartRequired", "restart kube-apiserver on cp-1")
    assert summarise([conditions[0], conditions[2]]).reason == READY_REASON


# --- the health checks ------------------------------------------------------------------------


def ready_cases():
    """(Ready status, reason, expected Argo CD health) for every reason Ready can carry."""
    for reason in sorted(PROGRESSING_REASONS):
        yield "False", reason, "Progressing"
    for reason in sorted(FAILURE_REASONS):
        yield "False", reason, "Degraded"
    for reason in sorted(NOTICE_REASONS | {READY_REASON}):
        yield "True", reason, "Healthy"


CASES = [pytest.param(*case, id=f"{case[0]}-{case[1]}") for case in ready_cases()]


@pytest.mark.parametrize("status, reason, expected", CASES)
def test_argocd_health_check_classifies_every_reason(status, reason, expected):
    obj = collection(conditions=[condition("Ready", status, reason, "message")])
    assert health(obj) == (expected, f"{reason}: message")


def flux_expressions() -> dict[str, str]:
    """The AuditCollection's healthCheckExprs from docs/gitops.md, made runnable here.

    The documented expressions use CEL's optional field access (``a.?b.orValue(d)``), which Flux's
    CEL environment enables and this Python runtime lacks; it is rewritten to the equivalent
    ``(has(a.b) ? a.b : d)`` (the tests always bind ``status``).
    """
    import yaml

    text = GITOPS_DOC.read_text()
    for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S):
        for doc in yaml.safe_load_all(block):
            for entry in ((doc or {}).get("spec") or {}).get("healthCheckExprs") or []:
                if entry.get("kind") == "AuditCollection":
                    return {key: re.sub(r"([\w.]+)\.\?(\w+)\.orValue\(([^()]*)\)", r"(has(\1.\2) ? \1.\2 : \3)",
                                        entry[key]) for key in ("inProgress", "failed", "current")}
    raise AssertionError("no AuditCollection healthCheckExprs in docs/gitops.md")


def flux_health(obj: dict) -> str:
    """kstatus as Flux's CEL status reader decides it: inProgress, then failed, then current;
    none true means still in progress."""
    expressions = flux_expressions()
    context = {"metadata": obj["metadata"], "status": obj.get("status") or {}}
    for key, verdict in (("inProgress", "InProgress"), ("failed", "Failed"), ("current", "Current")):
        if cel.evaluate(expressions[key], context):
            return verdict
    return "InProgress"


FLUX_VERDICT = {"Progressing": "InProgress", "Degraded": "Failed", "Healthy": "Current"}


@pytest.mark.parametrize("status, reason, expected", CASES)
def test_flux_health_expressions_classify_every_reason(status, reason, expected):
    obj = collection(conditions=[condition("Ready", status, reason, "message")])
    assert flux_health(obj) == FLUX_VERDICT[expected]


def test_flux_health_waits_for_the_current_generation():
    stale = collection(generation=3, observed=2, conditions=[condition("Ready", "True", READY_REASON)])
    assert flux_health(stale) == "InProgress"
    assert flux_health(collection(conditions=[])) == "InProgress"
