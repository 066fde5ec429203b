"""``spec.detection``: which detection rules a collection requires, and what its policy does to them.

Typed and pure, so the operator's reconcile path calls it with values it already has:

* :func:`parse_detection` reads ``spec.detection`` (the pack rules by id, a ConfigMap of the
  user's own rules, the mode) into a :class:`DetectionSpec`, every problem a FieldError;
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

from kaudit.detect.coverage import BLIND, FIRES, PARTLY, UNRELATED, RuleCoverage, check
from kaudit.detect.model import Rule
from kaudit.errors import FieldError, InvalidInput, did_you_mean
from kaudit.policy.model import Policy

MODES = ("Report", "Refuse")
ALL_PACK = "*"
DEFAULT_KEY = "rules.json"
CONDITION = "DetectionCoverage"
# Reasons of the DetectionCoverage condition.
COVERED, PARTLY_BLIND, RULES_BLIND, BLINDING_REFUSED, RULES_INVALID = (
    "RulesCovered", "RulesPartlyBlind", "RulesBlind", "BlindingPolicyRefused", "RulesInvalid")
MAX_MESSAGE = 1024  # condition messages stay readable in kubectl describe
_KEYS = ("mode", "packRules", "configMapRef")
_REF_KEYS = ("name", "key")


@dataclass(frozen=True)
class ConfigMapRef:
    """A ConfigMap in the operator's namespace (its Role already reads ConfigMaps there)."""

    name: str
    key: str = DEFAULT_KEY


@dataclass(frozen=True)
class DetectionSpec:
    mode: str = "Report"
    pack_rules: tuple[str, ...] = (ALL_PACK,)  # pack rule ids; "*" for every one
    config_map: ConfigMapRef | None = None

    @property
    def refuses(self) -> bool:
        return self.mode == "Refuse"


def _pack_ids() -> tuple[str, ...]:
    from kaudit.detect.pack import PACK

    return tuple(entry.id for entry in PACK)


def parse_detection(raw: Any, path: str = "spec.detection") -> DetectionSpec | None:
    """``spec.detection`` as typed values; None when absent (no coverage is checked)."""
    if raw is None:
        return None
    errors: list[FieldError] = []
    if not isinstance(raw, dict):
        raise InvalidInput([FieldError(path, "must be an object")])
    for key in raw:
        if key not in _KEYS:
            errors.append(FieldError(f"{path}.{key}", "unknown field" + did_you_mean(key, _KEYS)))
    mode = raw.get("mode", "Report")
    if mode not in MODES:
        errors.append(FieldError(f"{path}.mode", f"unsupported value {mode!r}: supported values: {', '.join(MODES)}"))
    pack = raw.get("packRules", [ALL_PACK])
    ids = _pack_ids()
    if not isinstance(pack, list) or not all(isinstance(p, str) for p in pack):
        errors.append(FieldError(f"{path}.packRules", "must be a list of pack rule ids"))
        pack = []
    for i, rule_id in enumerate(pack):
        if rule_id != ALL_PACK and rule_id not in ids:
            errors.append(FieldError(f"{path}.packRules[{i}]", f"not a rule of kaudit's pack: {rule_id!r}"
                                     + did_you_mean(rule_id, ids)))
    ref = _config_map_ref(raw.get("configMapRef"), f"{path}.configMapRef", errors)
    if errors:
        raise InvalidInput(errors)
    return DetectionSpec(mode=str(mode), pack_rules=tuple(dict.fromkeys(pack)), config_map=ref)


def _config_map_ref(raw: Any, path: str, errors: list[FieldError]) -> ConfigMapRef | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        errors.append(FieldError(path, "must be an object"))
        return None
    for key in raw:
        if key not in _REF_KEYS:
            errors.append(FieldError(f"{path}.{key}", "unknown field" + did_you_mean(key, _REF_KEYS)))
    name, key = raw.get("name"), raw.get("key", DEFAULT_KEY)
    if not isinstance(name, str) or not name:
        errors.append(FieldError(f"{path}.name", "is required"))
    if not isinstance(key, str) or not key:
        errors.append(FieldError(f"{path}.key", "must be a non-empty string"))
    return ConfigMapRef(str(name or ""), str(key or DEFAULT_KEY))


def pack_required(spec: DetectionSpec) -> list[Rule]:
    from kaudit.detect.pack import PACK, pack_rules

    wanted = set(spec.pack_rules)
    every = ALL_PACK in wanted
    return [rule for entry, rule in zip(PACK, pack_rules()) if every or entry.id in wanted]


def rules_from_config_map(config_map: Mapping[str, Any] | None, ref: ConfigMapRef, namespace: str) -> list[Rule]:
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


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


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
        return Assessment("False", reason, _cut(message), refuse, tuple(results))
    if partly:
        message = (f"{len(partly)} of {len(counted)} required rule(s) partly blind under {policy_name}: "
                   f"{_describe(partly)}")
        return Assessment("True", PARTLY_BLIND, _cut(message), False, tuple(results))
    fires = sum(r.verdict == FIRES for r in results)
    return Assessment("True", COVERED, f"all {fires} required rule(s) fire under {policy_name}", False,
                      tuple(results))


def invalid_rules(exc: InvalidInput) -> Assessment:
    """The condition when the required rules cannot be read (the policy itself is not judged)."""
    return Assessment("False", RULES_INVALID, _cut("; ".join(str(e) for e in exc.errors)), False)
