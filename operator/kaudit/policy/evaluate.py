"""The rule evaluator: which audit level kube-apiserver gives a request.

Mirrors ``NewPolicyRuleEvaluator`` / ``EvaluatePolicyRule`` / ``ruleMatches`` in
``k8s.io/apiserver/pkg/audit/policy/checker.go``: the first matching rule wins; no match gives
level None with the policy's omitStages; policy-level omitStages are unioned into every rule's;
a rule's omitManagedFields, when set, overrides the policy's.

API (small on purpose; the simulator calls it in a hot loop)::

    from kaudit.policy.evaluate import Evaluator, RequestAttributes, attributes_from_event

    evaluator = Evaluator(policy)                 # policy: kaudit.policy.model.Policy
    decision = evaluator.evaluate(attrs)          # attrs: RequestAttributes
    decision = evaluator.evaluate_event(event)    # event: audit.k8s.io/v1 Event as a dict
    evaluator.decision_json(decision)             # the ``policy eval`` output line (no newline)

``Decision`` is frozen and there is one instance per rule (plus one for "no rule matched"), so
decisions can be compared by identity or by ``decision.rule``. ``evaluate_event`` caches
decisions keyed on the attributes the policy actually looks at (evaluation is a pure function
of them); it raises ``ValueError`` for an event whose fields have the wrong JSON types, for the
same events as ``attributes_from_event`` whatever the policy looks at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import unquote

from kaudit.policy.model import Policy, PolicyRule

# evaluate_event's cache is cleared when it reaches this many entries, so its memory stays at a
# few megabytes whatever the log holds. Its keys leave out what no rule looks at and fold every
# username no rule lists into one (rules compare usernames only for equality), so a log with
# thousands of users still fits: a 200 MB generated log needs about 10k keys.
_CACHE_LIMIT = 16_384
# Stands for every username that no rule's ``users`` lists; never equal to a real username, so
# it fails every ``users`` check while ``userGroups`` checks still see the request's groups.
_OTHER_USER = object()


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """What the evaluator looks at (upstream's authorizer.Attributes, as far as audit uses it)."""

    user: str | None  # username; None when the request carries no user at all
    groups: tuple[str, ...]
    verb: str  # API verb (get, list, watch, create, ...) or lower-case HTTP method for non-resource URLs
    resource_request: bool
    namespace: str = ""  # "" for cluster-scoped resources
    api_group: str = ""  # "" for the core group
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""  # URL path without query; what nonResourceURLs match


@dataclass(frozen=True, slots=True)
class Decision:
    level: str
    omit_stages: frozenset[str]
    omit_managed_fields: bool
    rule: int | None  # 0-based index of the matching rule; None when no rule matched

    def as_dict(self) -> dict:
        return {
            "level": self.level,
            "omitStages": sorted(self.omit_stages),
            "omitManagedFields": self.omit_managed_fields,
            "rule": self.rule,
        }


# A compiled matcher takes the attributes as positional values, in RequestAttributes' order.
Matcher = Callable[[str | None, tuple, str, bool, str, str, str, str, str, str], bool]


def _resource_entry_matcher(group: str, resources: tuple[str, ...], names: tuple[str, ...]):
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

    def matches(user, groups, verb, resource_request, namespace, api_group, resource, subresource, name, path):
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


def _field(mapping: dict, key: str, kind: type, where: str):
    value = mapping.get(key)
    if value is None:
        return kind()
    if type(value) is not kind:
        raise ValueError(f"{where}{key} must be a {'string' if kind is str else kind.__name__}")
    return value


def attributes_from_event(event: dict) -> RequestAttributes:
    """The request attributes of an audit Event: a resource request when ``objectRef.resource``
    is set, else a non-resource request whose path is ``requestURI`` without its query string.
    The user is ``event.user`` (the authenticated user; policy is evaluated before impersonation).

    Two details follow what the policy saw when kube-apiserver evaluated it, not what the event
    shows later: a create without subresource has no name (the URL has none; kube-apiserver
    fills ``objectRef.name`` in from the body afterwards, see LogRequestObject in
    pkg/audit/request.go), and the path is percent-decoded (it is the URL's decoded path).
    """
    if type(event) is not dict:
        raise ValueError("an audit event must be a JSON object")
    user = event.get("user")
    if user is not None and type(user) is not dict:
        raise ValueError("user must be an object")
    ref = event.get("objectRef")
    if ref is not None and type(ref) is not dict:
        raise ValueError("objectRef must be an object")
    groups = _field(user, "groups", list, "user.") if user else []
    if any(type(g) is not str for g in groups):
        raise ValueError("user.groups must be a list of strings")
    verb = _field(event, "verb", str, "")
    resource = _field(ref, "resource", str, "objectRef.") if ref else ""
    if resource:
        return RequestAttributes(
            user=_field(user, "username", str, "user.") if user is not None else None,
            groups=tuple(groups),
            verb=verb,
            resource_request=True,
            namespace=_field(ref, "namespace", str, "objectRef."),
            api_group=_field(ref, "apiGroup", str, "objectRef."),
            resource=resource,
            subresource=_field(ref, "subresource", str, "objectRef."),
            name=_request_name(verb, _field(ref, "subresource", str, "objectRef."), _field(ref, "name", str, "objectRef.")),
        )
    return RequestAttributes(
        user=_field(user, "username", str, "user.") if user is not None else None,
        groups=tuple(groups),
        verb=verb,
        resource_request=False,
        path=request_path(_field(event, "requestURI", str, "")),
    )


def request_path(request_uri: str) -> str:
    """The URL path kube-apiserver matches nonResourceURLs against: no query, percent-decoded."""
    path = request_uri.partition("?")[0]
    return unquote(path) if "%" in path else path


def _request_name(verb: str, subresource: str, name: str) -> str:
    return "" if verb == "create" and not subresource else name


@dataclass(frozen=True)
class AttributeUse:
    """What the rules can tell requests apart by, beyond verb, resource and path.

    A decision cache may leave out of its key what no rule looks at, and fold together the
    usernames (groups) no rule lists, without changing any decision: rules compare usernames and
    groups only for equality, and an empty list matches everything.
    """

    users: frozenset[str]  # usernames some rule lists
    groups: frozenset[str]  # groups some rule lists
    names: bool  # some rule lists resourceNames
    namespaces: bool  # some rule lists namespaces

    @classmethod
    def of(cls, rules: Iterable[PolicyRule]) -> AttributeUse:
        rules = tuple(rules)
        return cls(
            users=frozenset(user for rule in rules for user in rule.users),
            groups=frozenset(group for rule in rules for group in rule.user_groups),
            names=any(entry.resource_names for rule in rules for entry in rule.resources),
            namespaces=any(rule.namespaces for rule in rules),
        )


class Evaluator:
    """A policy compiled for evaluation. Build once, call :meth:`evaluate` many times."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self._decisions, self._default = _decisions(policy)
        self._rules = list(zip((compile_rule(rule) for rule in policy.rules), self._decisions))
        self._json = {d.rule: json.dumps(d.as_dict()) for d in self._decisions + [self._default]}
        # Attributes no rule looks at are left out of the cache key, so the cache stays small.
        use = AttributeUse.of(policy.rules)
        self._uses_users = bool(use.users or use.groups)
        self._uses_names = use.names
        self._uses_namespaces = use.namespaces
        self._rule_users = use.users
        self._cache: dict[tuple, Decision] = {}
        self._good_groups: set[tuple] = set()  # group lists already type-checked (when no rule uses users)

    def evaluate(self, attrs: RequestAttributes) -> Decision:
        return self._evaluate(attrs.user, attrs.groups, attrs.verb, attrs.resource_request, attrs.namespace,
                              attrs.api_group, attrs.resource, attrs.subresource, attrs.name, attrs.path)

    def _evaluate(self, *values) -> Decision:
        for matches, decision in self._rules:
            if matches(*values):
                return decision
        return self._default

    def _checked_groups(self, groups) -> bool:
        """True when ``groups`` (a non-empty JSON value) is a list of strings; remembers the good ones."""
        if type(groups) is not list:
            return False
        known = tuple(groups)  # hashing fails (TypeError) for nested lists or objects: malformed
        if known in self._good_groups:
            return True
        if any(type(g) is not str for g in known):
            return False
        if len(self._good_groups) >= _CACHE_LIMIT:
            self._good_groups.clear()
        self._good_groups.add(known)
        return True

    def decision_json(self, decision: Decision) -> str:
        """``{"level": ..., "omitStages": [...], "omitManagedFields": ..., "rule": ...}`` as one line."""
        return self._json[decision.rule]

    def evaluate_event(self, event: dict) -> Decision:
        """:meth:`evaluate` on :func:`attributes_from_event`, with a cache; ValueError on bad types."""
        try:
            ref = event.get("objectRef")
            user = event.get("user")
            verb = event.get("verb")
            verb = "" if verb is None else verb  # a JSON null is an unset string
            if user is None:
                username, groups = None, ()
            elif type(user) is not dict:
                raise TypeError
            elif self._uses_users:
                username = user.get("username")
                if username is None:
                    username = ""
                elif type(username) is not str:
                    raise TypeError
                if username not in self._rule_users:
                    username = _OTHER_USER  # keeps the cache small however many users the log has
                groups = user.get("groups")
                groups = () if groups is None else tuple(groups) if type(groups) is list else None
            else:
                # No rule looks at the user: leave it out of the key, but a wrongly typed user is
                # still a malformed event, whatever the policy (same answer as attributes_from_event).
                username, groups = user.get("username"), user.get("groups")
                if (username is not None and type(username) is not str) or \
                        (groups and not self._checked_groups(groups)) or (groups is not None and type(groups) is not list):
                    raise TypeError
                username, groups = "", ()
            resource = ref.get("resource") if ref is not None else None
            if resource:
                # Inline "None → ''" (no helper calls): this runs once per event.
                get = ref.get
                namespace = get("namespace")
                namespace = "" if namespace is None else namespace
                subresource = get("subresource")
                subresource = "" if subresource is None else subresource
                api_group = get("apiGroup")
                api_group = "" if api_group is None else api_group
                name = get("name")
                name = "" if name is None else name
                # Checked on every event: the key may leave them out (or blank a create's name),
                # so the check on a cache miss would not see them.
                if type(namespace) is not str or type(name) is not str:
                    raise TypeError
                if not self._uses_namespaces:
                    namespace = ""
                name = _request_name(verb, subresource, name) if self._uses_names else ""
                key = (username, groups, verb, True, namespace, api_group, resource, subresource, name, "")
            else:
                uri = event.get("requestURI")
                key = (username, groups, verb, False, "", "", "", "", "", "" if uri is None else request_path(uri))
            decision = self._cache.get(key)
            if decision is None:
                if not all(type(v) is str for v in key[2:3] + key[4:]):
                    raise TypeError
                if groups is None or any(type(g) is not str for g in groups):
                    raise TypeError
                decision = self._evaluate(*key)
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[key] = decision
            return decision
        except (AttributeError, TypeError):
            attributes_from_event(event)  # raises ValueError naming the offending field
            raise ValueError("malformed audit event") from None
