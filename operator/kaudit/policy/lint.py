"""Lints: problems kube-apiserver accepts silently, as warnings with field paths.

Each check is a small function returning FieldErrors; :func:`lint_policy` runs them all.
Rule coverage (:func:`covers`) is conservative: it says a rule is shadowed only when every
request the later rule can match is certainly matched by the earlier one.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Callable, Iterable

from kaudit.errors import FieldError
from kaudit.policy.catalog import BUILTIN_RESOURCES, KNOWN_VERBS, SENSITIVE_RESOURCES
from kaudit.policy.model import LEVEL_RANK, GroupResources, Policy, PolicyRule
from kaudit.policy.validation import group_wildcard_supported

if TYPE_CHECKING:
    from kaudit.policy.loader import LoadResult

_RULE_KEYS = ("level", "users", "userGroups", "verbs", "resources", "namespaces", "nonResourceURLs",
              "omitStages", "omitManagedFields")


# --- unknown fields -------------------------------------------------------------------------

def unknown_field_warnings(paths: Iterable[str]) -> list[FieldError]:
    warnings = []
    for path in paths:
        parent, _, key = path.rpartition(".")
        if key == "verbs" and parent.rpartition(".")[2].startswith("resources["):
            message = ("unknown field: 'verbs' belongs on the rule, not inside a resources entry; "
                       "kube-apiserver drops it silently, so this rule matches every verb")
        else:
            close = difflib.get_close_matches(key, _RULE_KEYS + ("group", "resourceNames", "rules", "apiVersion", "kind"), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            message = f"unknown field{hint}: kube-apiserver drops it silently, which can widen the rule"
        warnings.append(FieldError(path, message))
    return warnings


# --- coverage --------------------------------------------------------------------------------

def _subset(later: tuple[str, ...], earlier: tuple[str, ...]) -> bool:
    """An earlier list constraint admits everything a later one does (empty = anything)."""
    return not earlier or (bool(later) and set(later) <= set(earlier))


def _resource_pattern_covers(pattern: str, resource: str) -> bool:
    if pattern in ("*", resource):
        return True
    if pattern.endswith("/*"):
        base = pattern[:-2]
        return resource == base or resource.startswith(base + "/")
    if pattern.startswith("*/"):
        return resource.endswith("/" + pattern[2:]) and "/" in resource
    return False


def _group_resources_covers(earlier: GroupResources, later: GroupResources) -> bool:
    if earlier.group != "*" and earlier.group != later.group:
        return False
    if earlier.resources:
        if not later.resources:
            return False
        if not all(any(_resource_pattern_covers(p, r) for p in earlier.resources) for r in later.resources):
            return False
    return _subset(later.resource_names, earlier.resource_names)


def _url_covers(pattern: str, url: str) -> bool:
    if pattern in ("*", url):
        return True
    return pattern.endswith("*") and url != "*" and url.startswith(pattern.rstrip("*"))


def covers(earlier: PolicyRule, later: PolicyRule) -> bool:
    """True when every request ``later`` matches is also matched by ``earlier``."""
    if not (_subset(later.users, earlier.users) and _subset(later.user_groups, earlier.user_groups)
            and _subset(later.verbs, earlier.verbs)):
        return False
    earlier_resource = bool(earlier.namespaces or earlier.resources)
    later_resource = bool(later.namespaces or later.resources)
    if earlier_resource:
        if not later_resource:
            return False
        if not _subset(later.namespaces, earlier.namespaces):
            return False
        if not earlier.resources:
            return True
        later_entries = later.resources or (GroupResources(group="*"),)
        return all(any(_group_resources_covers(e, l) for e in earlier.resources) for l in later_entries)
    if earlier.non_resource_urls:
        if later_resource or not later.non_resource_urls:
            return False
        return all(any(_url_covers(p, u) for p in earlier.non_resource_urls) for u in later.non_resource_urls)
    return True


def matches_everything(rule: PolicyRule) -> bool:
    return not (rule.users or rule.user_groups or rule.verbs or rule.resources or rule.namespaces
                or rule.non_resource_urls)


# --- checks ----------------------------------------------------------------------------------

def lint_verbs(policy: Policy) -> list[FieldError]:
    warnings = []
    for i, rule in enumerate(policy.rules):
        for j, verb in enumerate(rule.verbs):
            if verb in KNOWN_VERBS or verb == "*":
                continue
            close = difflib.get_close_matches(verb.lower(), sorted(KNOWN_VERBS), n=1, cutoff=0.6)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            warnings.append(FieldError(f"rules[{i}].verbs[{j}]",
                                       f'"{verb}" is not a Kubernetes request verb (verbs are lower-case and '
                                       f"compared exactly), so it never matches{hint}"))
        for key, values in (("verbs", rule.verbs), ("users", rule.users), ("userGroups", rule.user_groups),
                            ("namespaces", rule.namespaces)):
            if "*" in values:
                warnings.append(FieldError(f"rules[{i}].{key}", f'{key} has no wildcard: "*" matches only the literal '
                                                                f'string "*"; leave {key} empty to match all'))
    return warnings


def lint_resources(policy: Policy) -> list[FieldError]:
    warnings = []
    for i, rule in enumerate(policy.rules):
        for j, entry in enumerate(rule.resources):
            known = BUILTIN_RESOURCES.get(entry.group)
            if known is None:
                continue
            for k, name in enumerate(entry.resources):
                if name == "*" or name.startswith("*/"):
                    continue
                resource = name[:-2] if name.endswith("/*") else name
                if resource in known:
                    continue
                close = difflib.get_close_matches(resource, sorted(known), n=1)
                hint = f'; did you mean "{close[0]}"?' if close else ""
                elsewhere = [g for g, names in BUILTIN_RESOURCES.items() if resource in names]
                if elsewhere:
                    hint = f'; it is in group "{elsewhere[0]}"'

                group = entry.group or "core"
                warnings.append(FieldError(f"rules[{i}].resources[{j}].resources[{k}]",
                                           f'"{name}" is not a resource of the built-in {group} API group '
                                           f"(names are plural and lower-case), so it never matches{hint}"))
    return warnings


def _probe_rule(group: str, resource: str) -> PolicyRule:
    return PolicyRule(level="None", resources=(GroupResources(group=group, resources=(resource,)),))


# A ConfigMap is sensitive because it is often used for credentials; one the rule names
# (resourceNames) is a deliberate choice of an object whose content the author knows, such as
# kaudit's own policy ConfigMap. A named Secret or token is still a secret.
NAMED_OBJECTS_NOT_SENSITIVE = frozenset({("", "configmaps")})


def _may_match_resource(rule: PolicyRule, group: str, resource: str) -> bool:
    """Could ``rule`` match some request for group/resource (ignoring users, verbs, names)?"""
    if rule.non_resource_urls and not (rule.resources or rule.namespaces):
        return False
    if not rule.resources:
        return True
    base, _, sub = resource.partition("/")
    for entry in rule.resources:
        if entry.group not in (group, "*"):
            continue
        if entry.resource_names and (group, resource) in NAMED_OBJECTS_NOT_SENSITIVE:
            continue
        if not entry.resources:
            return True
        for pattern in entry.resources:
            if pattern in ("*", resource) or (pattern.endswith("/*") and pattern[:-2] == base) or (
                    sub and pattern == f"*/{sub}"):
                return True
    return False


def lint_sensitive_bodies(policy: Policy) -> list[FieldError]:
    exposed: dict[int, list[str]] = {}
    for group, resource in SENSITIVE_RESOURCES:
        probe = _probe_rule(group, resource)
        for i, rule in enumerate(policy.rules):
            if not _may_match_resource(rule, group, resource):
                continue
            if LEVEL_RANK[rule.level] >= LEVEL_RANK["Request"]:
                exposed.setdefault(i, []).append(f"{group}/{resource}" if group else resource)
            if covers(rule, probe):
                break  # every later rule is unreachable for this resource
    return [
        FieldError(f"rules[{i}].level", f"{policy.rules[i].level} logs bodies of {', '.join(names)}, which can hold "
                                        "credentials; add an earlier rule that logs them at Metadata")
        for i, names in sorted(exposed.items())
    ]


SHADOW_CHECK_LIMIT = 1000  # the check compares every pair of rules


def _file_rule_name(index: int) -> str:
    return f"rules[{index}]"


def lint_shadowed(policy: Policy, rule_name: Callable[[int], str] = _file_rule_name) -> list[FieldError]:
    """``rule_name`` names the earlier rule in the message (a composer numbers the user's rules its own way)."""
    if len(policy.rules) > SHADOW_CHECK_LIMIT:
        return [FieldError("rules", f"{len(policy.rules)} rules: the shadowed-rule check was skipped "
                                    f"(it runs up to {SHADOW_CHECK_LIMIT} rules)")]
    warnings = []
    for j, rule in enumerate(policy.rules):
        for i in range(j):
            if covers(policy.rules[i], rule):
                warnings.append(FieldError(f"rules[{j}]", f"never matches: every request it matches is matched "
                                                          f"first by {rule_name(i)}"))
                break
    return warnings


def lint_catch_all(policy: Policy) -> list[FieldError]:
    if any(matches_everything(rule) for rule in policy.rules):
        return []
    return [FieldError("rules", "no catch-all rule (a last rule with only a level): requests no rule matches "
                                "are silently not logged")]


def lint_request_received(policy: Policy) -> list[FieldError]:
    if "RequestReceived" in policy.omit_stages:
        return []
    logged = [r for r in policy.rules if r.level != "None" and "RequestReceived" not in r.omit_stages]
    if not logged:
        return []
    return [FieldError("omitStages", "RequestReceived is not omitted: every logged request is written twice "
                                     "(when received and when complete); add omitStages: [RequestReceived]")]


def lint_group_wildcard(policy: Policy, kubernetes_version: str) -> list[FieldError]:
    if not group_wildcard_supported(kubernetes_version) or kubernetes_version:
        return []  # an older target already refuses it at validation; a named new one is fine
    return [
        FieldError(f"rules[{i}].resources[{j}].group",
                   'group "*" needs kube-apiserver 1.36 or newer; older versions refuse the whole file')
        for i, rule in enumerate(policy.rules)
        for j, entry in enumerate(rule.resources)
        if entry.group == "*"
    ]


def duplicate_field_warnings(paths: Iterable[str]) -> list[FieldError]:
    return [FieldError(path, "duplicate field: kube-apiserver silently keeps only the last value") for path in paths]


def lint_policy(policy: Policy, *, unknown_fields: Iterable[str] = (), duplicate_fields: Iterable[str] = (),
                kubernetes_version: str = "", rule_name: Callable[[int], str] = _file_rule_name) -> list[FieldError]:
    """All warnings for a policy that loads. ``unknown_fields``/``duplicate_fields`` come from LoadResult;
    ``rule_name`` names a rule that another message refers to (default ``rules[i]``)."""
    return (
        unknown_field_warnings(unknown_fields)
        + duplicate_field_warnings(duplicate_fields)
        + lint_verbs(policy)
        + lint_resources(policy)
        + lint_sensitive_bodies(policy)
        + lint_shadowed(policy, rule_name)
        + lint_catch_all(policy)
        + lint_request_received(policy)
        + lint_group_wildcard(policy, kubernetes_version)
    )


def lint_loaded(result: LoadResult, kubernetes_version: str = "") -> list[FieldError]:
    """The lint verdict on a loaded file (a ``LoadResult`` that is ok): the one every command gives,
    whichever reads the file (policy validate and lint, simulate, install-policy)."""
    assert result.policy is not None, "lint_loaded takes a file that loaded"
    return lint_policy(result.policy, unknown_fields=result.unknown_fields,
                       duplicate_fields=result.duplicate_fields, kubernetes_version=kubernetes_version)
