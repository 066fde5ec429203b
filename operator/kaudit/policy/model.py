"""The ``audit.k8s.io/v1`` Policy as kube-apiserver decodes it.

Field names follow the Go types in ``k8s.io/apiserver/pkg/apis/audit/v1/types.go``. Lists are
tuples so a loaded policy is immutable and hashable. ``PolicyRule.omit_managed_fields`` is
``None`` when the rule does not set it (then the policy-level value applies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

API_VERSION = "audit.k8s.io/v1"
KIND = "Policy"

# Audit levels, from least to most detail (upstream's Level constants).
LEVELS = ("None", "Metadata", "Request", "RequestResponse")
LEVEL_RANK = {name: rank for rank, name in enumerate(LEVELS)}
# Stages an event can be emitted at (upstream's Stage constants), in request order.
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
# The JSON field names kube-apiserver decodes; it drops any other key silently.
RULE_FIELDS = frozenset({
    "level", "users", "userGroups", "verbs", "resources", "namespaces",
    "nonResourceURLs", "omitStages", "omitManagedFields",
})
GROUP_RESOURCES_FIELDS = frozenset({"group", "resources", "resourceNames"})


@dataclass(frozen=True)
class GroupResources:
    group: str = ""  # "" is the core API group; "*" every group (kube-apiserver 1.36+)
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyRule:
    level: str = ""
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: tuple[str, ...] = ()
    omit_managed_fields: bool | None = None


@dataclass(frozen=True)
class Policy:
    rules: tuple[PolicyRule, ...] = ()
    omit_stages: tuple[str, ...] = ()
    omit_managed_fields: bool = False


def group_resources_to_dict(gr: GroupResources) -> dict[str, Any]:
    out: dict[str, Any] = {"group": gr.group}
    if gr.resources:
        out["resources"] = list(gr.resources)
    if gr.resource_names:
        out["resourceNames"] = list(gr.resource_names)
    return out


def rule_to_dict(rule: PolicyRule) -> dict[str, Any]:
    """The rule as YAML/JSON would spell it, without empty fields."""
    out: dict[str, Any] = {"level": rule.level}
    for key, value in (
        ("users", rule.users),
        ("userGroups", rule.user_groups),
        ("verbs", rule.verbs),
        ("namespaces", rule.namespaces),
        ("nonResourceURLs", rule.non_resource_urls),
    ):
        if value:
            out[key] = list(value)
    if rule.resources:
        out["resources"] = [group_resources_to_dict(gr) for gr in rule.resources]
    if rule.omit_stages:
        out["omitStages"] = list(rule.omit_stages)
    if rule.omit_managed_fields is not None:
        out["omitManagedFields"] = rule.omit_managed_fields
    return out


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND}
    if policy.omit_stages:
        out["omitStages"] = list(policy.omit_stages)
    if policy.omit_managed_fields:
        out["omitManagedFields"] = True
    out["rules"] = [rule_to_dict(rule) for rule in policy.rules]
    return out
