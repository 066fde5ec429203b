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
_KEYS = ("mode", "packRules", "configMapRef", "sync")
_REF_KEYS = ("name", "key")
_SYNC_KEYS = ("site", "credentialsSecretRef", "owner", "cluster", "dryRun")
_SECRET_KEYS = ("name", "apiKeyKey", "appKeyKey")
SYNC_CONDITION = "DetectionRulesSynced"
SYNCED, SYNC_PLANNED, SYNC_FAILED, SYNC_CONFLICT = "RulesSynced", "SyncPlanned", "SyncFailed", "RuleNameTaken"


@dataclass(frozen=True)
class ConfigMapRef:
    """A ConfigMap in the operator's namespace (its Role already reads ConfigMaps there)."""

    name: str
    key: str = DEFAULT_KEY


@dataclass(frozen=True)
class SecretRef:
    """A Secret in the operator's namespace holding the Datadog API and application keys."""

    name: str
    api_key_key: str = "api-key"
    app_key_key: str = "app-key"


@dataclass(frozen=True)
class SyncSpec:
    """Keep the required rules in Datadog (kaudit.detect.sync); off unless given."""

    credentials: SecretRef
    site: str = "datadoghq.com"
    owner: str = ""  # default: the cluster, else the collection's name
    cluster: str = ""  # kube_cluster_name the queries are scoped to; "" for one fleet-wide set
    dry_run: bool = False


@dataclass(frozen=True)
class DetectionSpec:
    mode: str = "Report"
    pack_rules: tuple[str, ...] = (ALL_PACK,)  # pack rule ids; "*" for every one
    config_map: ConfigMapRef | None = None
    sync: SyncSpec | None = None

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
    _unknown(raw, path, _KEYS, errors)
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
    sync = _sync(raw.get("sync"), f"{path}.sync", errors)
    if errors:
        raise InvalidInput(errors)
    return DetectionSpec(mode=str(mode), pack_rules=tuple(dict.fromkeys(pack)), config_map=ref, sync=sync)


def _unknown(raw: dict[str, Any], path: str, known: tuple[str, ...], errors: list[FieldError]) -> None:
    for key in raw:
        if key not in known:
            errors.append(FieldError(f"{path}.{key}", "unknown field" + did_you_mean(key, known)))


def _string(raw: dict[str, Any], key: str, default: str, path: str, errors: list[FieldError]) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        errors.append(FieldError(f"{path}.{key}", "must be a string"))
        return default
    return value


def _sync(raw: Any, path: str, errors: list[FieldError]) -> SyncSpec | None:
    from kaudit.detect.sync import SITES, check_tag_value

    if raw is None:
        return None
    if not isinstance(raw, dict):
        errors.append(FieldError(path, "must be an object"))
        return None
    _unknown(raw, path, _SYNC_KEYS, errors)
    site = _string(raw, "site", SITES[0], path, errors)
    if site not in SITES:
        errors.append(FieldError(f"{path}.site", f"unsupported value {site!r}: supported values: {', '.join(SITES)}"))
    owner, cluster = (_string(raw, key, "", path, errors) for key in ("owner", "cluster"))
    for key, value in (("owner", owner), ("cluster", cluster)):
        problem = value and check_tag_value(value)
        if problem:
            errors.append(FieldError(f"{path}.{key}", problem))
    dry_run = raw.get("dryRun", False)
    if not isinstance(dry_run, bool):
        errors.append(FieldError(f"{path}.dryRun", "must be true or false"))
    secret = raw.get("credentialsSecretRef")
    where = f"{path}.credentialsSecretRef"
    if not isinstance(secret, dict):
        errors.append(FieldError(where, "is required (a Secret with the Datadog API and application keys)"))
        secret = {}
    _unknown(secret, where, _SECRET_KEYS, errors)
    name = _string(secret, "name", "", where, errors)
    if not name and isinstance(raw.get("credentialsSecretRef"), dict):
        errors.append(FieldError(f"{where}.name", "is required"))
    ref = SecretRef(name, _string(secret, "apiKeyKey", "api-key", where, errors),
                    _string(secret, "appKeyKey", "app-key", where, errors))
    return SyncSpec(ref, site, owner, cluster, dry_run is True)


def _config_map_ref(raw: Any, path: str, errors: list[FieldError]) -> ConfigMapRef | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        errors.append(FieldError(path, "must be an object"))
        return None
    _unknown(raw, path, _REF_KEYS, errors)
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


def sync_condition(spec: SyncSpec, rules: list[Rule], api_factory: Any, credentials: Any,
                   collection: str) -> Assessment:
    """Run the sync of ``rules`` (blocking: call it off the event loop) and say how it went as the
    DetectionRulesSynced condition. ``api_factory(credentials, site)`` makes the RulesApi."""
    from kaudit.detect.sync import CONFLICT, SyncError, sync

    owner = spec.owner or spec.cluster or collection
    api = api_factory(credentials, spec.site)
    try:
        result = sync(api, rules, owner, spec.cluster, dry_run=spec.dry_run)
    except SyncError as exc:
        return Assessment("False", SYNC_FAILED, _cut(str(exc)), False)
    finally:
        close = getattr(api, "close", None)
        if close:
            close()
    counts: dict[str, int] = {}
    for action in result.plan.actions:
        counts[action.kind] = counts.get(action.kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    conflicts = result.plan.of(CONFLICT)
    if conflicts:
        message = f"owner {owner}: {summary}; name taken: " + "; ".join(f"{a.name} ({a.reason})" for a in conflicts)
        return Assessment("False", SYNC_CONFLICT, _cut(message), False)
    if spec.dry_run:
        return Assessment("True", SYNC_PLANNED, _cut(f"dry run, owner {owner}: {summary} (nothing written)"), False)
    return Assessment("True", SYNCED, _cut(f"owner {owner}: {summary}"), False)
