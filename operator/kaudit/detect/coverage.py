"""Coverage: does an audit policy record what a detection rule reads?

For each query of a rule, kaudit enumerates the requests the query can match, evaluates the
policy on each of them exactly as kube-apiserver would (:mod:`kaudit.policy.evaluate`), and asks
whether the event kube-apiserver then writes can still match. The verdict of a query is

* ``fires``: every request the query targets is recorded with what the query reads;
* ``blind``: none is;
* ``partly-blind``: some are not (the report names the policy rule and level that decides them).

Requests are enumerated as cells of a finite partition (docs/detection.md, "Coverage"): along each
attribute the policy and the query look at (verb, API group, resource, subresource, namespace,
name, user and groups, URL path), the candidate values are those either side names plus one value
neither names ("kaudit-other"), because a policy compares those attributes only for equality,
membership or a prefix. A query is evaluated on a cell in three-valued logic: what the cell fixes
is true or false, what only the live request decides (bodies, status code, annotations) is
unknown. A cell is a *target* when the query is not false on it with everything recorded
(RequestResponse, every stage), and *covered* when it is not false on the event the policy makes
of it (bodies cut to the level, stages omitted, level None dropped). kube-apiserver writes an
event per stage, so a request is covered when any of its stages is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import product
from typing import Any, Callable, Iterable, Iterator

from kaudit.detect.fields import ABSENT as _ABSENT
from kaudit.detect.fields import REMAPPED, moved_source, needed_level
from kaudit.detect.model import Rule, query_names
from kaudit.detect.query import And, MatchAll, Node, Not, Or, Predicate, Term, parse_query, terms, value_matcher
from kaudit.policy.catalog import BUILTIN_RESOURCES, NON_RESOURCE_VERBS, RESOURCE_VERBS
from kaudit.policy.evaluate import Decision, Evaluator, RequestAttributes
from kaudit.policy.model import LEVEL_RANK, Policy

OTHER = "kaudit-other"
OTHER_GROUP = "kaudit.example"
OTHER_USER = "kaudit-probe@example.com"
ANONYMOUS = "system:anonymous"
CONNECT_SUBRESOURCES = frozenset({"exec", "attach", "portforward", "proxy"})
CONNECT_VERBS = ("create", "get")
BODY_VERBS = frozenset({"create", "update", "patch"})
FIRES, PARTLY, BLIND, UNRELATED = "fires", "partly-blind", "blind", "unrelated"
VERDICT_ORDER = (UNRELATED, FIRES, PARTLY, BLIND)
MAX_EXAMPLES = 3

# Built-in resources served cluster-wide (no namespace), for the catalog's groups.
CLUSTER_SCOPED = frozenset("""
namespaces nodes persistentvolumes componentstatuses clusterroles clusterrolebindings
mutatingwebhookconfigurations validatingwebhookconfigurations validatingadmissionpolicies
validatingadmissionpolicybindings mutatingadmissionpolicies mutatingadmissionpolicybindings
customresourcedefinitions apiservices selfsubjectreviews tokenreviews selfsubjectaccessreviews
selfsubjectrulesreviews subjectaccessreviews certificatesigningrequests clustertrustbundles
flowschemas prioritylevelconfigurations storageversions ingressclasses ipaddresses servicecidrs
runtimeclasses priorityclasses csidrivers csinodes storageclasses volumeattachments
volumeattributesclasses storageversionmigrations deviceclasses resourceslices devicetaintrules
""".split())

# Attributes of the request itself: the policy decides on them and a cell fixes them.
DIMENSIONS = {
    "http.method": "verb", "usr.name": "user", "user.groups": "groups", "objectRef.resource": "resource",
    "objectRef.subresource": "subresource", "objectRef.namespace": "namespace",
    "objectRef.apiGroup": "api_group", "objectRef.name": "name", "http.url_details.path": "path",
    "stage": "stage", "level": "level",
}
_UNKNOWN = object()  # what only the live request decides (a body's content, the status code)
# One matcher per predicate: the enumeration evaluates the same few terms on every cell.
_matcher = lru_cache(maxsize=4096)(value_matcher)


# --- cells ----------------------------------------------------------------------------------------

def _builtin_groups(resource: str) -> list[str]:
    return sorted(g for g, names in BUILTIN_RESOURCES.items() if resource in names)


def _api_path(cell: dict[str, Any]) -> str:
    if not cell["resource_request"]:
        return str(cell["path"])
    group = cell["api_group"]
    out = "/api/v1" if not group else f"/apis/{group}/v1"
    if cell["namespace"]:
        out += f"/namespaces/{cell['namespace']}"
    out += f"/{cell['resource']}"
    if cell["name"] and (cell["verb"] != "create" or cell["subresource"]):
        out += f"/{cell['name']}"
    if cell["subresource"]:
        out += f"/{cell['subresource']}"
    return out


def _body_possible(cell: dict[str, Any], which: str) -> bool:
    """Whether kube-apiserver can put a request (response) body into this request's event."""
    if not cell["resource_request"]:
        return which == "requestObject" and cell["verb"] in ("post", "put", "patch")
    if cell["subresource"] in CONNECT_SUBRESOURCES:
        return False  # streams are never part of an event
    if which == "requestObject":
        return cell["verb"] in BODY_VERBS or cell["verb"] in ("delete", "deletecollection")
    return cell["verb"] != "watch" and cell.get("stage") in (None, "ResponseComplete")


def _values(attribute: str, tag: bool, cell: dict[str, Any], recorded: str | None) -> Any:
    """The attribute's values on a cell: a list, _UNKNOWN or _ABSENT. ``recorded``: the level the
    event was written at, or None for "everything recorded"."""
    if tag:
        return ["kubernetes.audit"] if attribute == "source" else _UNKNOWN
    if moved_source(attribute):
        return _ABSENT
    dimension = DIMENSIONS.get(attribute)
    if dimension == "level":
        return [recorded] if recorded else _UNKNOWN
    if dimension == "stage":
        return [cell["stage"]] if "stage" in cell else _UNKNOWN
    if dimension:
        if dimension not in cell:
            return _UNKNOWN
        if dimension == "path":
            return [_api_path(cell)] if "resource" in cell or not cell["resource_request"] else _UNKNOWN
        value = cell[dimension]
        if dimension == "groups":
            return list(value)
        if attribute.startswith("objectRef.") and not cell["resource_request"]:
            return _ABSENT
        return [value] if value else _ABSENT
    top = attribute.split(".", 1)[0]
    if attribute == "http.status_code" or top == "responseStatus":
        return _ABSENT if cell.get("stage") == "RequestReceived" else _UNKNOWN  # no response yet
    if attribute in REMAPPED or top in ("http", "usr"):
        return _ABSENT  # the pipeline writes only the remapped ones there
    if top == "objectRef":
        return _UNKNOWN if cell.get("resource_request", True) else _ABSENT
    if top in ("requestObject", "responseObject"):
        if "verb" not in cell:
            return _UNKNOWN
        if not _body_possible(cell, top):
            return _ABSENT
        if recorded is not None and LEVEL_RANK[recorded] < LEVEL_RANK[needed_level(attribute)]:
            return _ABSENT
        return _UNKNOWN
    return _UNKNOWN


def _truth(node: Node, cell: dict[str, Any], recorded: str | None) -> bool | None:
    """Kleene three-valued truth of ``node`` on a cell: True, False or None (unknown)."""
    if isinstance(node, Term):
        values = _values(node.field, node.tag, cell, recorded)
        if values is _UNKNOWN:
            return None
        return _matcher(node.predicate)([] if values is _ABSENT else values)
    if isinstance(node, MatchAll):
        return True
    if isinstance(node, Not):
        inner = _truth(node.child, cell, recorded)
        return None if inner is None else not inner
    results = [_truth(child, cell, recorded) for child in node.children]
    if isinstance(node, And):
        return False if False in results else None if None in results else True
    return True if True in results else None if None in results else False


# --- candidate values -------------------------------------------------------------------------------

def _instances(predicate: Predicate) -> list[str]:
    """Concrete values a predicate names: its literal, or its pattern filled in."""
    if predicate.kind != "text":
        return []
    if predicate.regex is None:
        return [predicate.text]
    return [predicate.text.replace("*", "kaudit").replace("?", "x")]


def _named(tree: Node, attribute: str) -> set[str]:
    return {value for term, _ in terms(tree) if term.field == attribute and not term.tag
            for value in _instances(term.predicate)}


def _derived_groups(user: str) -> tuple[str, ...]:
    """The groups kube-apiserver's authenticators give an identity of that shape."""
    if user == ANONYMOUS:
        return ("system:unauthenticated",)
    if user.startswith("system:serviceaccount:") and user.count(":") == 3:
        namespace = user.split(":")[2]
        return ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated")
    if user.startswith("system:node:"):
        return ("system:nodes", "system:authenticated")
    return ("system:authenticated",)


_ASSIGNED_GROUPS = ("system:unauthenticated", "system:serviceaccounts")


def _identities(policy: Policy, tree: Node) -> list[tuple[str, tuple[str, ...]]]:
    users = {u for rule in policy.rules for u in rule.users} | _named(tree, "usr.name") | {OTHER_USER, ANONYMOUS}
    groups = {g for rule in policy.rules for g in rule.user_groups} | _named(tree, "user.groups")
    out = {(user, _derived_groups(user)) for user in users}
    for group in groups:
        if group == "system:unauthenticated":
            continue  # only anonymous requests carry it, and anonymous is always a candidate
        if group.startswith("system:serviceaccounts"):
            namespace = group.partition("system:serviceaccounts:")[2] or OTHER
            user = f"system:serviceaccount:{namespace}:{OTHER}"
            out.add((user, _derived_groups(user)))
        elif group == "system:nodes":
            out.add((f"system:node:{OTHER}", _derived_groups(f"system:node:{OTHER}")))
        elif group != "system:authenticated":
            # any other group can come with any authenticated user (a token file, OIDC claims)
            for user in users - {ANONYMOUS}:
                if not user.startswith("system:serviceaccount:"):
                    out.add((user, tuple(sorted(set(_derived_groups(user)) | {group}))))
    return sorted(out)


def _resource_triples(policy: Policy, tree: Node) -> list[tuple[str, str, str]]:
    """(API group, resource, subresource) candidates."""
    named_resources = _named(tree, "objectRef.resource")
    named_subs = _named(tree, "objectRef.subresource")
    named_groups = _named(tree, "objectRef.apiGroup")
    resources, subs, groups = set(named_resources) | {OTHER}, set(named_subs) | {""}, set(named_groups)
    for rule in policy.rules:
        for entry in rule.resources:
            groups.add(entry.group if entry.group != "*" else OTHER_GROUP)
            for name in entry.resources:
                resource, _, sub = name.partition("/")
                resources.add(OTHER if resource == "*" else resource)
                subs.add(OTHER if sub == "*" else sub)
    groups |= {"", OTHER_GROUP}
    out = set()
    for resource in resources:
        known = _builtin_groups(resource)
        for group in known or sorted(groups):
            if group == "*":
                continue
            builtin = BUILTIN_RESOURCES.get(group, frozenset())
            for sub in subs:
                if known and sub and f"{resource}/{sub}" not in builtin and sub not in named_subs:
                    continue  # not a subresource this built-in resource has
                out.add((group, resource, sub))
    return sorted(out)


def _paths(policy: Policy, tree: Node) -> list[str]:
    out = set(_named(tree, "http.url_details.path")) | {"/" + OTHER}
    for rule in policy.rules:
        for url in rule.non_resource_urls:
            prefix = url[:-1]
            out.add(prefix + ("" if prefix.endswith("/") else "/") + OTHER if url.endswith("*") else url)
    return sorted(out)


# --- verdicts ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """A set of target requests one policy rule decides the same way."""

    rule: int | None  # the deciding policy rule (0-based), None when no rule matches
    level: str
    reason: str  # why they are not recorded well enough
    count: int
    examples: tuple[str, ...]


@dataclass(frozen=True)
class QueryCoverage:
    query: str
    verdict: str
    needs: str  # the least level the query's fields need
    reads: tuple[str, ...]  # the attributes it reads that the policy's level decides (bodies)
    targets: int  # target requests (cells) enumerated
    blind: tuple[Finding, ...]  # why the blind ones are blind
    recorded_by: tuple[tuple[int | None, str, int], ...]  # (rule, level, requests) of the covered ones
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleCoverage:
    rule: Rule
    verdict: str
    queries: tuple[QueryCoverage, ...]

    @property
    def required(self) -> bool:
        return not self.rule.optional


def _coverage_tree(query_text: str, fields: Iterable[str]) -> Node:
    tree = parse_query(query_text)
    extra = [Term(f.lstrip("@"), Predicate("exists")) for f in fields]
    return And((tree, *extra)) if extra else tree


def _describe(cell: dict[str, Any]) -> str:
    who = cell["user"]
    if not cell["resource_request"]:
        return f"{cell['verb']} {cell['path']} by {who}"
    resource = cell["resource"] + (f"/{cell['subresource']}" if cell["subresource"] else "")
    if cell["api_group"]:
        resource += f".{cell['api_group']}"
    where = f" in {cell['namespace']}" if cell["namespace"] else ""
    name = f" {cell['name']}" if cell["name"] else ""
    return f"{cell['verb']} {resource}{name}{where} by {who}"


class _Enumerator:
    def __init__(self, policy: Policy, tree: Node):
        self.tree = tree
        self.triples = _resource_triples(policy, tree)
        self.paths = _paths(policy, tree)
        self.identities = _identities(policy, tree)
        named_verbs = _named(tree, "http.method")
        self.resource_verbs = sorted(set(RESOURCE_VERBS) | named_verbs)
        self.non_resource_verbs = sorted(set(NON_RESOURCE_VERBS) | named_verbs)
        self.namespaces = sorted({ns for rule in policy.rules for ns in rule.namespaces if ns}
                                 | _named(tree, "objectRef.namespace") | {OTHER})
        self.names = sorted({n for rule in policy.rules for e in rule.resources for n in e.resource_names}
                            | _named(tree, "objectRef.name") | {""})

    def possible(self, cell: dict[str, Any]) -> bool:
        return _truth(self.tree, cell, None) is not False

    def cells(self) -> Iterator[dict[str, Any]]:
        for resource_request in (True, False):
            cell = {"resource_request": resource_request}
            if not self.possible(cell):
                continue
            if resource_request:
                yield from self._resource_cells(cell)
            else:
                for path, verb in product(self.paths, self.non_resource_verbs):
                    yield from self._who(dict(cell, path=path, verb=verb, api_group="", resource="",
                                              subresource="", namespace="", name=""))

    def _resource_cells(self, base: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for group, resource, sub in self.triples:
            cell = dict(base, api_group=group, resource=resource, subresource=sub)
            if not self.possible(cell):
                continue
            verbs = CONNECT_VERBS if sub in CONNECT_SUBRESOURCES else self.resource_verbs
            scoped = resource in CLUSTER_SCOPED and _builtin_groups(resource)
            for verb in verbs:
                with_verb = dict(cell, verb=verb)
                if not self.possible(with_verb):
                    continue
                for namespace in ([""] if scoped else self.namespaces + ([] if _builtin_groups(resource) else [""])):
                    with_ns = dict(with_verb, namespace=namespace)
                    if not self.possible(with_ns):
                        continue
                    for name in self.names:
                        yield from self._who(dict(with_ns, name=name))

    def _who(self, cell: dict[str, Any]) -> Iterator[dict[str, Any]]:
        cell.setdefault("path", "")
        for user, groups in self.identities:
            full = dict(cell, user=user, groups=groups)
            if self.possible(full):
                yield full


def _stages(cell: dict[str, Any]) -> tuple[str, ...]:
    long_running = cell["verb"] == "watch" or cell["subresource"] in CONNECT_SUBRESOURCES
    return ("RequestReceived",) + (("ResponseStarted",) if long_running else ()) + ("ResponseComplete",)


def _attributes(cell: dict[str, Any]) -> RequestAttributes:
    name = "" if cell["verb"] == "create" and not cell["subresource"] else cell["name"]
    return RequestAttributes(user=cell["user"], groups=cell["groups"], verb=cell["verb"],
                             resource_request=cell["resource_request"], namespace=cell["namespace"],
                             api_group=cell["api_group"], resource=cell["resource"],
                             subresource=cell["subresource"], name=name,
                             path=cell["path"] if not cell["resource_request"] else "")


def _reads(tree: Node) -> tuple[str, ...]:
    return tuple(sorted({t.field for t, negated in terms(tree)
                         if not t.tag and not negated and needed_level(t.field) != "Metadata"}))


def _needs(tree: Node) -> str:
    levels = [needed_level(t.field) for t, negated in terms(tree) if not t.tag and not negated]
    return max(levels + ["Metadata"], key=LEVEL_RANK.__getitem__)


def _warnings(tree: Node) -> list[str]:
    out = []
    for term, _ in terms(tree):
        target = None if term.tag else moved_source(term.field)
        if target:
            out.append(f"@{term.field} never matches: Datadog's pipeline moves it to @{target}")
    return sorted(set(out))


def _reason(tree: Node, cell_stages: list[dict[str, Any]], decision: Decision, needs: str, reads: tuple[str, ...],
            rule_label: Callable[[int | None], str]) -> str:
    who = rule_label(decision.rule)
    if decision.level == "None":
        return f"{who} drops these requests (level None)"
    kept = [c for c in cell_stages if c["stage"] not in decision.omit_stages]
    if kept and any(_truth(tree, c, "RequestResponse") is not False for c in kept):
        wanted = ", ".join("@" + r for r in reads) or "fields"
        return f"{who} logs these requests at {decision.level}; this detection reads {wanted} (needs {needs})"
    omitted = sorted({c["stage"] for c in cell_stages} & decision.omit_stages)
    if omitted:
        return f"{who} omits stage {', '.join(omitted)}, the only stage(s) at which this detection can match"
    return f"{who} logs these requests at {decision.level}, at which this query cannot match"


def query_coverage(policy: Policy, evaluator: Evaluator, query_text: str, fields: Iterable[str] = (),
                   rule_label: Callable[[int | None], str] | None = None) -> QueryCoverage:
    tree = _coverage_tree(query_text, fields)
    rule_label = rule_label or _default_label
    needs, reads = _needs(tree), _reads(tree)
    blind: dict[tuple[Any, ...], list[str]] = {}
    covered: dict[tuple[Any, ...], int] = {}
    targets = 0
    for cell in _Enumerator(policy, tree).cells():
        staged = [dict(cell, stage=stage) for stage in _stages(cell)]
        full = [c for c in staged if _truth(tree, c, None) is not False]
        if not full:
            continue
        targets += 1
        decision = evaluator.evaluate(_attributes(cell))
        seen = decision.level != "None" and any(
            c["stage"] not in decision.omit_stages and _truth(tree, c, decision.level) is not False for c in full)
        if seen:
            covered[(decision.rule, decision.level)] = covered.get((decision.rule, decision.level), 0) + 1
        else:
            reason = _reason(tree, full, decision, needs, reads, rule_label)
            blind.setdefault((decision.rule, decision.level, reason), []).append(_describe(cell))
    if not targets:
        verdict = UNRELATED if _truth(tree, {"resource_request": True}, None) is False and \
            _truth(tree, {"resource_request": False}, None) is False and _names_other_source(tree) else BLIND
    else:
        verdict = FIRES if not blind else BLIND if not covered else PARTLY
    findings = tuple(Finding(rule, level, reason, len(examples), tuple(examples[:MAX_EXAMPLES]))
                     for (rule, level, reason), examples in sorted(blind.items(), key=_finding_order))
    warnings = _warnings(tree)
    if not targets and verdict == BLIND:
        warnings.append("no kube-apiserver audit event can match this query as Datadog stores it")
    recorded_by = tuple(sorted(((r, lvl, n) for (r, lvl), n in covered.items()),
                               key=lambda item: -1 if item[0] is None else item[0]))
    return QueryCoverage(query_text, verdict, needs, reads, targets, findings, recorded_by, tuple(warnings))


def _finding_order(item: tuple[tuple[int | None, str, str], list[str]]) -> tuple[Any, ...]:
    (rule, _, reason), examples = item
    return (-len(examples), -1 if rule is None else rule, reason)


def _names_other_source(tree: Node) -> bool:
    return any(t.tag and t.field == "source" and not negated for t, negated in terms(tree))


def _default_label(rule: int | None) -> str:
    return "no policy rule (nothing matches)" if rule is None else f"rule {rule}"


def rule_coverage(policy: Policy, rule: Rule, evaluator: Evaluator | None = None,
                  rule_label: Callable[[int | None], str] | None = None) -> RuleCoverage:
    """The verdict of every query of ``rule`` and of the rule: blind when no case can hold with the
    blind queries' counts at zero, partly blind when a query a case reads is not fully covered."""
    from kaudit.detect.conditions import parse_condition

    evaluator = evaluator or Evaluator(policy)
    queries = tuple(query_coverage(policy, evaluator, q.query, q.fields(), rule_label) for q in rule.queries)
    verdicts = [q.verdict for q in queries]
    if all(v == UNRELATED for v in verdicts):
        return RuleCoverage(rule, UNRELATED, queries)
    if rule.options.detection_method == "new_value" or len(queries) == 1:
        worst = max(verdicts, key=VERDICT_ORDER.index)
        return RuleCoverage(rule, worst, queries)
    names = query_names(rule)
    big = 10 ** 9
    counts = {name: 0 if v in (BLIND, UNRELATED) else big for name, v in zip(names, verdicts)}
    possible = any(parse_condition(case.condition, names)(counts) for case in rule.cases)
    if not possible:
        return RuleCoverage(rule, BLIND, queries)
    partial = any(v in (PARTLY, BLIND) for v in verdicts)
    return RuleCoverage(rule, PARTLY if partial else FIRES, queries)


def policy_rule_label(policy: Policy) -> Callable[[int | None], str]:
    """``rule 4 (resources=[secrets,...])``: the deciding rule with what it matches."""
    from kaudit.simulate.report import rule_summary

    def label(index: int | None) -> str:
        if index is None:
            return "no policy rule (nothing matches)"
        summary = rule_summary(policy.rules[index])
        if len(summary) > 70:
            summary = summary[:67] + "..."
        return f"rule {index} {summary}" if summary.startswith("(") else f"rule {index} ({summary})"

    return label


def check(policy: Policy, rules: Iterable[Rule]) -> list[RuleCoverage]:
    evaluator = Evaluator(policy)
    label = policy_rule_label(policy)
    return [rule_coverage(policy, rule, evaluator, label) for rule in rules]


# --- what a policy makes of a complete event ------------------------------------------------------------

def as_recorded(event: dict[str, Any], evaluator: Evaluator) -> dict[str, Any] | None:
    """The event kube-apiserver writes for ``event`` (recorded at RequestResponse) under the
    evaluator's policy: None when the level is None or the event's stage is omitted; bodies above
    the level removed; ``level`` set."""
    decision = evaluator.evaluate_event(event)
    if decision.level == "None" or event.get("stage") in decision.omit_stages:
        return None
    out = dict(event, level=decision.level)
    if LEVEL_RANK[decision.level] < LEVEL_RANK["Request"]:
        out.pop("requestObject", None)
    if LEVEL_RANK[decision.level] < LEVEL_RANK["RequestResponse"]:
        out.pop("responseObject", None)
    return out
