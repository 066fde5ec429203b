"""``spec.detection``: which detection rules a collection requires, and what its policy does to them.

Typed and pure, so the operator's reconcile path calls it with values it already has
(``spec.detection`` is parsed with the rest of the spec, :class:`kaudit.api.spec.DetectionSpec`):

* :func:`pack_required` picks the pack rules by id (an unknown id is a FieldError);
* :func:`rules_from_config_map` reads the user's rules from that ConfigMap's data (Datadog API
  JSON or Terraform JSON, as ``kaudit rules check --rules`` reads them);
* :func:`assess` checks the required rules against a policy and says, in one
  :class:`Assessment`, the ``DetectionCoverage`` condition and whether the policy must be refused.

Modes: ``Report`` only reports; ``Refuse`` also refuses a policy under which a required rule is
blind (the operator then keeps the last good policy, as for an invalid one). Partly blind rules
are reported in both modes and never refuse: a policy may drop some requests knowingly (the
noise filters of every profile do), and the condition names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from kaudit.api.spec import ALL_PACK_RULES, DetectionRulesRef, DetectionSpec
from kaudit.detect.coverage import BLIND, FIRES, PARTLY, UNRELATED, RuleCoverage, check
from kaudit.detect.model import Rule
from kaudit.detect.sync import condition_message
from kaudit.errors import FieldError, InvalidInput, did_you_mean
from kaudit.policy.model import Policy

CONDITION = "DetectionCoverage"
# Reasons of the DetectionCoverage condition (it never decides Ready: see kaudit.reconcile.detection).
COVERED, PARTLY_BLIND, RULES_BLIND, BLINDING_REFUSED, RULES_INVALID = (
    "RulesCovered", "RulesPartlyBlind", "RulesBlind", "BlindingPolicyRefused", "RulesInvalid")


def pack_required(spec: DetectionSpec, path: str = "spec.detection.packRules") -> list[Rule]:
    """The pack rules ``spec.packRules`` names ("*": all); InvalidInput for an id the pack lacks."""
    from kaudit.detect.pack import PACK, pack_rules

    ids = tuple(entry.id for entry in PACK)
    unknown = [FieldError(f"{path}[{i}]", f"not a rule of kaudit's pack: {rule_id!r}" + did_you_mean(rule_id, ids))
               for i, rule_id in enumerate(spec.pack_rules) if rule_id != ALL_PACK_RULES and rule_id not in ids]
    if unknown:
        raise InvalidInput(unknown)
    wanted = set(spec.pack_rules)
    every = ALL_PACK_RULES in wanted
    return [rule for entry, rule in zip(PACK, pack_rules()) if every or entry.id in wanted]


def rules_from_config_map(config_map: Mapping[str, Any] | None, ref: DetectionRulesRef, namespace: str) -> list[Rule]:
    """The user's rules from the ConfigMap's data; InvalidInput naming the ConfigMap and key."""
    from kaudit.detect.loaders import load_rules_text

    where = f"ConfigMap {namespace}/{ref.name}"
    if config_map is None:
        raise InvalidInput([FieldError(where, "not found (spec.detection.configMapRef)")])
    data = config_map.get("data") or {}
    if ref.key not in data:
        raise InvalidInput([FieldError(f"{where}: data.{ref.key}", "missing (spec.detection.configMapRef.key)")])
    name = ref.key if ref.key.endswith((".json", ".tf.json")) else f"{ref.key}.json"
    rules = load_rules_text(str(data[ref.key]), f"{where}: {name}")
    return rules


@dataclass(frozen=True)
class Assessment:
    status: str  # "True" or "False"
    reason: str
    message: str
    refuse: bool  # Refuse mode and a required rule is blind: the policy must not be installed
    results: tuple[RuleCoverage, ...] = ()


def _first_reason(result: RuleCoverage) -> str:
    for query in result.queries:
        for finding in query.blind:
            return finding.reason
    for query in result.queries:
        for warning in query.warnings:
            return warning
    return ""


def _describe(results: list[RuleCoverage]) -> str:
    return "; ".join(f"{r.rule.name}: {_first_reason(r)}" for r in results)


def assess(policy: Policy, rules: list[Rule], spec: DetectionSpec, policy_name: str = "the policy") -> Assessment:
    """The DetectionCoverage condition of ``rules`` (every one required) under ``policy``."""
    results = check(policy, rules)
    blind = [r for r in results if r.verdict == BLIND]
    partly = [r for r in results if r.verdict == PARTLY]
    counted = [r for r in results if r.verdict != UNRELATED]
    if blind:
        refuse = spec.refuses
        reason = BLINDING_REFUSED if refuse else RULES_BLIND
        lead = (f"{policy_name} refused, the last good policy is kept: it would blind {len(blind)} required "
                f"rule(s)" if refuse else f"{len(blind)} of {len(counted)} required rule(s) blind under {policy_name}")
        message = f"{lead}: {_describe(blind)}"
        if partly:
            message += f". Partly blind: {_describe(partly)}"
        return Assessment("False", reason, condition_message(message), refuse, tuple(results))
    if partly:
        message = (f"{len(partly)} of {len(counted)} required rule(s) partly blind under {policy_name}: "
                   f"{_describe(partly)}")
        return Assessment("True", PARTLY_BLIND, condition_message(message), False, tuple(results))
    fires = sum(r.verdict == FIRES for r in results)
    return Assessment("True", COVERED, f"all {fires} required rule(s) fire under {policy_name}", False,
                      tuple(results))


def invalid_rules(exc: InvalidInput) -> Assessment:
    """The condition when the required rules cannot be read (the policy itself is not judged)."""
    return Assessment("False", RULES_INVALID, condition_message("; ".join(str(e) for e in exc.errors)), False)

