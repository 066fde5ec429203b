"""The rule evaluator: which audit level kube-apiserver gives a request.

Mirrors ``NewPolicyRuleEvaluator`` / ``EvaluatePolicyRule`` / ``ruleMatches`` in
``k8s.io/apiserver/pkg/audit/policy/checker.go``: the first matching rule wins; no match gives
level None with the policy's omitStages; policy-level omitStages are unioned into every rule's;
a rule's omitManagedFields, when set, overrides the policy's.

API (small on purpose; the simulator calls it in a hot loop)::

    from kaudit.policy.evaluate import Evaluator, RequestAttributes, attributes_from_event

    evaluator = Evaluator(policy)                 # policy: kaudit.policy.model.Policy
    decision = evaluator.evaluate(attrs)          # attrs: RequestAttributes
    decision = evaluator.decide(event)            # event: kaudit.auditlog.AuditEvent (a decoded line)
    decision = evaluator.evaluate_event(event)    # event: audit.k8s.io/v1 Event as a dict
    evaluator.decision_json(decision)             # the ``policy eval`` output line (no newline)

``Decision`` is frozen and there is one instance per rule (plus one for "no rule matched"), so
decisions can be compared by identity or by ``decision.rule``. ``decide`` and ``evaluate_event``
cache decisions keyed on the attributes the policy actually looks at (evaluation is a pure
function of them: :class:`kaudit.auditlog.RequestKeys`). Events are read by
:mod:`kaudit.auditlog`, which checks the type of every field it reads: ``evaluate_event`` raises
``ValueError`` for an event whose fields have the wrong JSON types, whatever the policy looks at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from kaudit.auditlog import (
    OTHER_USER, AuditEvent, MalformedEvent, RequestAttributes, RequestKeys, event_from_mapping, request_attributes,
    request_path,
)
from kaudit.policy.model import Policy, PolicyRule

# Re-exported: the evaluator's API names them (request_path and OTHER_USER for callers that
# build attributes themselves).
__all__ = ["AttributeUse", "Decision", "Evaluator", "OTHER_USER", "RequestAttributes", "attributes_from_event",
           "compile_rule", "request_path"]

# The decision cache (kaudit.auditlog.RequestKeys) is cleared when it reaches this many entries,
# so its memory stays at a few megabytes whatever the log holds. Its keys leave out what no rule
# looks at and fold every username no rule lists into one, so a log with thousands of users
# still fits: a 200 MB generated log needs about 10k keys.
_CACHE_LIMIT = 16_384


@dataclass(frozen=True, slots=True)
class Decision:
    level: str
    omit_stages: frozenset[str]
    omit_managed_fields: bool
    rule: int | None  # 0-based index of the matching rule; None when no rule matched

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "omitStages": sorted(self.omit_stages),
            "omitManagedFields": self.omit_managed_fields,
            "rule": self.rule,
        }


# A compiled matcher takes the attributes as positional values, in RequestAttributes' order.
Matcher = Callable[[Any, tuple[str, ...], str, bool, str, str, str, str, str, str], bool]
# One GroupResources entry, precomputed: (group, matches every resource, check(resource, subresource, name)).
_Entry = tuple[str, bool, Callable[[str, str, str], bool]]


def _resource_entry_matcher(group: str, resources: tuple[str, ...], names: tuple[str, ...]) -> _Entry:
    """(group, match-all?, check) for one GroupResources entry, precomputed."""
    exact = frozenset(r for r in resources if r != "*")
    any_resource = "*" in resources
    any_sub = frozenset(r[2:] for r in resources if r.startswith("*/"))  # "*/log"
    all_subs_of = frozenset(r[:-2] for r in resources if r.endswith("/*"))  # "pods/*" (plain pods too)
    name_set = frozenset(names)

    def check(resource: str, subresource: str, name: str) -> bool:
        if name_set and name not in name_set:
            return False
        if any_resource or resource in all_subs_of:
            return True
        if subresource:
            return f"{resource}/{subresource}" in exact or subresource in any_sub
        return resource in exact

    return group, not resources, check


def compile_rule(rule: PolicyRule) -> Matcher:
    """A function deciding whether ``rule`` matches, with the rule's lists turned into sets."""
    users = frozenset(rule.users)
    user_groups = frozenset(rule.user_groups)
    verbs = frozenset(rule.verbs)
    namespaces = frozenset(rule.namespaces)
    has_namespaces = bool(rule.namespaces)
    entries = [_resource_entry_matcher(e.group, e.resources, e.resource_names) for e in rule.resources]
    resource_rule = bool(rule.namespaces or rule.resources)
    urls = rule.non_resource_urls
    url_any = "*" in urls
    url_exact = frozenset(urls)
    url_prefixes = tuple(u.rstrip("*") for u in urls if u.endswith("*"))

    def matches(user: Any, groups: tuple[str, ...], verb: str, resource_request: bool, namespace: str, api_group: str,
                resource: str, subresource: str, name: str, path: str) -> bool:
        if users and (user is None or user not in users):
            return False
        if user_groups and (user is None or user_groups.isdisjoint(groups)):
            return False
        if verbs and verb not in verbs:
            return False
        if resource_rule:
            if not resource_request:
                return False
            if has_namespaces and namespace not in namespaces:
                return False
            if not entries:
                return True
            for group, match_all, check in entries:
                if group == api_group or group == "*":
                    if match_all or check(resource, subresource, name):
                        return True
            return False
        if urls:
            if resource_request:
                return False
            return url_any or path in url_exact or path.startswith(url_prefixes)
        return True

    return matches


def _decisions(policy: Policy) -> tuple[list[Decision], Decision]:
    policy_stages = frozenset(policy.omit_stages)
    per_rule = [
        Decision(
            level=rule.level,
            omit_stages=policy_stages | frozenset(rule.omit_stages),
            omit_managed_fields=policy.omit_managed_fields if rule.omit_managed_fields is None else rule.omit_managed_fields,
            rule=i,
        )
        for i, rule in enumerate(policy.rules)
    ]
    return per_rule, Decision("None", policy_stages, policy.omit_managed_fields, None)


def attributes_from_event(event: dict[str, Any]) -> RequestAttributes:
    """The request attributes of an audit Event given as a dict (see
    :func:`kaudit.auditlog.request_attributes`); ValueError naming the field for a malformed one."""
    return request_attributes(event_from_mapping(event))


@dataclass(frozen=True)
class AttributeUse:
    """What the rules can tell requests apart by, beyond verb, resource and path.

    A decision cache may leave out of its key what no rule looks at, and fold together the
    usernames (groups) no rule lists, without changing any decision: rules compare usernames and
    groups only for equality, and an empty list matches everything.
    """

    users: frozenset[str]  # usernames some rule lists
    groups: frozenset[str]  # groups some rule lists
    names: frozenset[str] | None  # the resourceNames rules list; None when no rule lists any
    namespaces: frozenset[str] | None  # the namespaces rules list; None when no rule lists any

    @classmethod
    def of(cls, rules: Iterable[PolicyRule]) -> AttributeUse:
        rules = tuple(rules)
        names = frozenset(name for rule in rules for entry in rule.resources for name in entry.resource_names)
        namespaces = frozenset(namespace for rule in rules for namespace in rule.namespaces)
        return cls(
            users=frozenset(user for rule in rules for user in rule.users),
            groups=frozenset(group for rule in rules for group in rule.user_groups),
            names=names if any(entry.resource_names for rule in rules for entry in rule.resources) else None,
            namespaces=namespaces if any(rule.namespaces for rule in rules) else None,
        )

    def keys(self, compute: Callable[[AuditEvent, RequestAttributes], Any], limit: int) -> RequestKeys:
        """A :class:`kaudit.auditlog.RequestKeys` cache for rules with this use."""
        return RequestKeys(self.users, self.groups, self.names, self.namespaces, compute, limit)


class Evaluator:
    """A policy compiled for evaluation. Build once, call :meth:`evaluate` many times."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self._decisions, self._default = _decisions(policy)
        self._rules = list(zip((compile_rule(rule) for rule in policy.rules), self._decisions))
        self._json = {d.rule: json.dumps(d.as_dict()) for d in self._decisions + [self._default]}
        # Attributes no rule looks at are left out of the cache key, so the cache stays small.
        use = AttributeUse.of(policy.rules)
        self._keys = use.keys(lambda _event, attrs: self.evaluate(attrs), _CACHE_LIMIT)
        self._cache = self._keys.cache
        # The same key, with the result line as the value: what `policy eval` writes.
        self._lines = use.keys(lambda _event, attrs: self._json[self.evaluate(attrs).rule], _CACHE_LIMIT)

    def evaluate(self, attrs: RequestAttributes) -> Decision:
        return self._evaluate(attrs.user, attrs.groups, attrs.verb, attrs.resource_request, attrs.namespace,
                              attrs.api_group, attrs.resource, attrs.subresource, attrs.name, attrs.path)

    def _evaluate(self, *values: Any) -> Decision:
        for matches, decision in self._rules:
            if matches(*values):
                return decision
        return self._default

    def decision_json(self, decision: Decision) -> str:
        """``{"level": ..., "omitStages": [...], "omitManagedFields": ..., "rule": ...}`` as one line."""
        return self._json[decision.rule]

    def decide(self, event: AuditEvent) -> Decision:
        """:meth:`evaluate` on the event's request, cached by the request as the rules see it."""
        decision: Decision = self._keys.get(event)
        return decision

    def decision_lines(self, events: list[AuditEvent | MalformedEvent]) -> list[str | None]:
        """:meth:`decision_json` of :meth:`decide` for each event (None for a malformed one)."""
        return self._lines.values(events)

    def evaluate_event(self, event: dict[str, Any]) -> Decision:
        """:meth:`decide` on an event given as a dict; ValueError naming the field for a malformed one."""
        return self.decide(event_from_mapping(event))
