"""Coverage verdicts: every pack rule under every built-in profile, and the corner cases.

The expected verdicts are derived here, not taken from kaudit's output: each pack rule's target
requests are written out by hand from its query (SHAPES), the identities and resources to try are
taken from what the profile's own rules name, the level of each request comes from the policy
evaluator (kube-apiserver's rule matching), and a request is covered when that level is at least
the level the rule's fields need (requestObject: Request) and the ResponseComplete stage is kept.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import pytest

from kaudit.cli import main
from kaudit.detect.coverage import BLIND, FIRES, PARTLY, UNRELATED, check, query_coverage, rule_coverage
from kaudit.detect.loaders import rules_from_api
from kaudit.detect.pack import PACK, pack_rules
from kaudit.policy import PROFILES, PolicyOptions, compose_policy, load_policy
from kaudit.policy.catalog import NON_RESOURCE_VERBS, RESOURCE_VERBS
from kaudit.policy.evaluate import Evaluator, RequestAttributes
from kaudit.policy.model import LEVEL_RANK

CONTROL_PLANE_USERS = ("system:kube-controller-manager", "system:kube-scheduler")
PUBLIC = ("/healthz", "/livez", "/readyz", "/version")
ANY = None


@dataclass(frozen=True)
class Shape:
    """What a pack rule's query targets, read by hand from the query."""

    verbs: tuple[str, ...] | None  # None: every verb
    resources: tuple[tuple[str, str, str], ...] | None  # (group, resource, subresource); None: any request
    namespaces: tuple[str, ...] = ("default",)
    users: tuple[str, ...] | None = None  # only these users (None: anyone)
    excluded_users: tuple[str, ...] = ()  # prefixes
    excluded_paths: tuple[str, ...] = ()  # prefixes of non-resource paths


NOT_CONTROL_PLANE = ("system:serviceaccount:kube-system:", "system:node:") + CONTROL_PLANE_USERS
SHAPES = {
    "kaudit-pod-exec": Shape(("create", "get"), (("", "pods", "exec"),)),
    "kaudit-pod-attach": Shape(("create", "get"), (("", "pods", "attach"),)),
    "kaudit-anonymous-allowed": Shape(ANY, ANY, users=("system:anonymous",), excluded_paths=PUBLIC),
    "kaudit-privileged-pod": Shape(("create",), (("", "pods", ""),)),
    "kaudit-host-network-pod": Shape(("create",), (("", "pods", ""),)),
    "kaudit-nodeport-service": Shape(("create", "update", "patch"), (("", "services", ""),)),
    "kaudit-cluster-admin-binding": Shape(("create", "update", "patch"), (
        ("rbac.authorization.k8s.io", "clusterrolebindings", ""), ("rbac.authorization.k8s.io", "rolebindings", ""))),
    "kaudit-admission-webhook": Shape(("create", "update", "patch", "delete"), (
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", ""),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", ""))),
    "kaudit-permission-enumeration": Shape(("create",), (("authorization.k8s.io", "selfsubjectrulesreviews", ""),),
                                           excluded_users=NOT_CONTROL_PLANE),
    "kaudit-kube-namespace-workload": Shape(("create",), (("", "pods", ""), ("", "serviceaccounts", "")),
                                            namespaces=("kube-system", "kube-public"), excluded_users=NOT_CONTROL_PLANE),
    "kaudit-denied-burst": Shape(ANY, ANY),
    "kaudit-secret-read-new-identity": Shape(("get", "list", "watch"), (("", "secrets", ""),)),
}
CLUSTER_SCOPED = {"clusterrolebindings", "mutatingwebhookconfigurations", "validatingwebhookconfigurations",
                  "selfsubjectrulesreviews", "nodes", "namespaces", "tokenreviews", "subjectaccessreviews"}


@functools.cache
def profile_policy(profile: str):
    return load_policy(compose_policy(PolicyOptions(profile=profile)).text).policy


def identities(policy) -> list[tuple[str, tuple[str, ...]]]:
    """An ordinary user, anonymous, and one identity for every user and group the policy names."""
    out = [("someone@example.com", ("system:authenticated",)), ("system:anonymous", ("system:unauthenticated",))]
    for rule in policy.rules:
        out += [(user, ("system:authenticated",)) for user in rule.users]
        for group in rule.user_groups:
            if group.startswith("system:serviceaccounts:"):
                ns = group.split(":")[2]
                out.append((f"system:serviceaccount:{ns}:x", ("system:serviceaccounts", group, "system:authenticated")))
            elif group == "system:nodes":
                out.append(("system:node:n1", (group, "system:authenticated")))
    return out


def any_requests(policy):
    """Every resource the policy names (and a pod, a custom resource), every non-resource path it names."""
    resources = {("", "pods", ""), ("example.com", "widgets", "")}
    paths = {"/api", "/apis/example.com"}
    for rule in policy.rules:
        for entry in rule.resources:
            for name in entry.resources or ("anyresource",):  # a group-only entry matches all of its group
                resource, _, sub = name.partition("/")
                resources.add((entry.group, resource, sub))
        paths |= {url.rstrip("*") + ("x" if url.endswith("*") else "") for url in rule.non_resource_urls}
    return sorted(resources), sorted(paths)


def target_requests(shape: Shape, policy):
    resources, paths = (shape.resources, []) if shape.resources is not ANY else any_requests(policy)
    # A shape open to every namespace ("default" stands for them) also tries the namespaces the policy
    # names (kaudit's self-audit rules name the operator namespace).
    named = () if shape.namespaces != ("default",) else tuple(
        sorted({ns for rule in policy.rules for ns in rule.namespaces} - {"", "default"}))
    for user, groups in identities(policy):
        if shape.users is not None and user not in shape.users:
            continue
        if any(user.startswith(prefix) for prefix in shape.excluded_users):
            continue
        for group, resource, sub in resources:
            namespaces = ("",) if resource in CLUSTER_SCOPED else shape.namespaces + named
            for verb in shape.verbs or RESOURCE_VERBS:
                for ns in namespaces:
                    yield RequestAttributes(user, groups, verb, True, ns, group, resource, sub)
        for path in paths:
            if not any(path.startswith(prefix) for prefix in shape.excluded_paths):
                for verb in shape.verbs or NON_RESOURCE_VERBS:
                    yield RequestAttributes(user, groups, verb, False, path=path)


def expected(entry, policy) -> tuple[str, frozenset]:
    evaluator = Evaluator(policy)
    covered, blind_rules = 0, set()
    for attrs in target_requests(SHAPES[entry.id], policy):
        decision = evaluator.evaluate(attrs)
        if (decision.level != "None" and LEVEL_RANK[decision.level] >= LEVEL_RANK[entry.needs]
                and "ResponseComplete" not in decision.omit_stages):
            covered += 1
        else:
            blind_rules.add(decision.rule)
    verdict = FIRES if not blind_rules else BLIND if not covered else PARTLY
    return verdict, frozenset(blind_rules)


@functools.cache
def expected_under(entry_id: str, profile: str) -> tuple[str, frozenset]:
    return expected(next(e for e in PACK if e.id == entry_id), profile_policy(profile))


RESULTS = {profile: dict(zip([e.id for e in PACK], check(profile_policy(profile), pack_rules())))
           for profile in PROFILES}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("entry", PACK, ids=[e.id for e in PACK])
def test_pack_verdict_under_each_profile_is_the_derived_one(profile, entry):
    verdict, blind_rules = expected_under(entry.id, profile)
    result = RESULTS[profile][entry.id]
    assert result.verdict == verdict
    assert {f.rule for f in result.queries[0].blind} == blind_rules  # the deciding policy rules
    assert result.queries[0].needs == entry.needs


def test_headline_verdicts_read_as_the_issue_expects():
    # Sanity on the derivation itself: the cases a reader can check by eye.
    # Under None only kaudit's self-audit rules log anything: exec into kaudit's own pods (at Metadata).
    assert RESULTS["None"]["kaudit-pod-exec"].verdict == PARTLY
    assert RESULTS["None"]["kaudit-nodeport-service"].verdict == BLIND
    # Bindings at Metadata there, except cluster-wide ones and kaudit's own (the self-audit rules).
    assert RESULTS["Datadog"]["kaudit-cluster-admin-binding"].verdict == PARTLY
    assert RESULTS["Datadog"]["kaudit-privileged-pod"].verdict == FIRES  # pod writes at RequestResponse
    assert RESULTS["Default"]["kaudit-privileged-pod"].verdict == FIRES  # writes at Request
    finding = RESULTS["Datadog"]["kaudit-nodeport-service"].queries[0].blind[0]
    assert finding.rule == 7 and finding.level == "Metadata"  # after the three self-audit rules
    assert finding.reason == ("rule 7 (everything) logs these requests at Metadata; this detection reads "
                              "@requestObject.spec.type (needs Request)")


def test_the_pack_table_in_the_docs_states_the_derived_verdicts():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "detection.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| rule | query"))
    profiles = [cell.strip() for cell in header.strip("|").split("|")][3:]
    assert sorted(profiles) == sorted(PROFILES)
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `kaudit-"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = (cells[2], dict(zip(profiles, cells[3:])))
    assert set(rows) == {entry.id for entry in PACK}
    for entry in PACK:
        needs, verdicts = rows[entry.id]
        assert needs == entry.needs
        for profile in PROFILES:
            assert verdicts[profile] == expected_under(entry.id, profile)[0], (entry.id, profile)


def policy_of(*rules, omit_stages=("RequestReceived",)):
    text = json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": list(omit_stages),
                       "rules": list(rules)})
    result = load_policy(text)
    assert result.ok, result.errors
    return result.policy


def coverage(policy, query, fields=()):
    return query_coverage(policy, Evaluator(policy), query, fields)


def test_response_bodies_need_request_response():
    query = "@objectRef.resource:selfsubjectrulesreviews @http.method:create @responseObject.status.incomplete:true"
    assert coverage(profile_policy("WriteRequestBodies"), query).verdict == FIRES
    result = coverage(profile_policy("Default"), query)
    assert result.verdict == BLIND and result.needs == "RequestResponse"
    assert "logs these requests at Request; this detection reads @responseObject.status.incomplete" in \
        result.blind[0].reason


def test_omitted_stages_blind_a_rule_that_reads_the_response():
    only_received = policy_of({"level": "Metadata"}, omit_stages=("ResponseStarted", "ResponseComplete", "Panic"))
    result = coverage(only_received, "@objectRef.resource:pods @http.status_code:403")
    assert result.verdict == BLIND and "omits stage ResponseComplete" in result.blind[0].reason
    # without the status code the RequestReceived event is enough
    assert coverage(only_received, "@objectRef.resource:pods @http.method:delete").verdict == FIRES


def test_namespace_and_user_rules_make_a_detection_partly_blind_and_are_named():
    policy = policy_of({"level": "None", "namespaces": ["kube-system"]}, {"level": "Metadata"})
    result = coverage(policy, "@objectRef.resource:serviceaccounts @objectRef.namespace:kube-* @http.method:create")
    assert result.verdict == PARTLY
    assert [(f.rule, f.level) for f in result.blind] == [(0, "None")]
    assert all(" in kube-system " in e for e in result.blind[0].examples)
    quiet = policy_of({"level": "None", "users": ["ci@example.com"]}, {"level": "Metadata"})
    result = coverage(quiet, "@objectRef.resource:secrets @http.method:get")
    assert result.verdict == PARTLY and result.blind[0].examples[0].endswith(" by ci@example.com")
    assert coverage(quiet, '@objectRef.resource:secrets -@usr.name:"ci@example.com"').verdict == FIRES


def test_aggregation_fields_count_as_read():
    policy = policy_of({"level": "Metadata"})
    assert coverage(policy, "@objectRef.resource:pods @http.method:create").verdict == FIRES
    grouped = coverage(policy, "@objectRef.resource:pods @http.method:create", ["@requestObject.spec.nodeName"])
    assert grouped.verdict == BLIND and grouped.needs == "Request"


def test_moved_fields_and_other_sources():
    policy = profile_policy("AllRequestBodies")
    moved = coverage(policy, "@verb:create @objectRef.resource:pods")
    assert moved.verdict == BLIND and moved.targets == 0
    assert moved.warnings[0] == "@verb never matches: Datadog's pipeline moves it to @http.method"
    assert coverage(policy, "source:cloudtrail @evt.name:ConsoleLogin").verdict == UNRELATED


def _rule(queries, condition, tags=()):
    return rules_from_api([{"name": "r", "tags": list(tags), "queries": [{"query": q} for q in queries],
                            "cases": [{"status": "high", "condition": condition}]}], "t.json")[0]


def test_case_conditions_decide_between_blind_and_partly_blind():
    # Default without the self-audit rules (which log pods in kaudit's namespace with responses):
    # pods at Request, so a responseObject query is blind there.
    policy = load_policy(compose_policy(PolicyOptions(profile="Default", self_audit=None)).text).policy
    queries = ["@objectRef.resource:pods @http.method:create",
               "@objectRef.resource:pods @http.method:create @responseObject.status.phase:Pending"]
    assert rule_coverage(policy, _rule(queries, "a > 0 && b > 0")).verdict == BLIND
    assert rule_coverage(policy, _rule(queries, "a > 0 || b > 0")).verdict == PARTLY
    assert rule_coverage(policy, _rule(queries[:1], "a > 0")).verdict == FIRES


# --- the command -------------------------------------------------------------------------------------

def test_check_cli_exit_codes_fail_on_and_optional_rules(capsys, tmp_path):
    assert main(["rules", "check", "--profile", "Default"]) == 0  # partly blind only
    out = capsys.readouterr().out
    assert out.startswith("Detection coverage under profile Default\n")
    assert main(["rules", "check", "--profile", "Default", "--fail-on", "partly-blind"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "partly-blind or worse under profile Default" in err
    assert main(["rules", "check", "--profile", "None", "-o", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    # Nothing fires everywhere under None: only kaudit's own namespace and API are logged.
    assert document["kind"] == "DetectionCoverage" and document["summary"]["fires"] == 0
    assert document["summary"]["blind"] + document["summary"]["partly-blind"] == len(PACK)
    assert main(["rules", "check", "--profile", "None", "--fail-on", "never"]) == 0
    capsys.readouterr()
    rules = tmp_path / "mine.json"
    rules.write_text(json.dumps([{"name": "mine", "tags": ["kaudit:optional"],
                                  "queries": [{"query": "@objectRef.resource:pods"}],
                                  "cases": [{"status": "low", "condition": "a > 0"}]}]))
    assert main(["rules", "check", "--profile", "None", "--rules", str(rules)]) == 0
    assert "partly-blind  Metadata        mine (optional)" in capsys.readouterr().out  # pods in kaudit's namespace


def test_check_cli_bad_policy_and_rules_name_the_file(capsys, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n")
    assert main(["rules", "check", "--policy", str(policy)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: {policy}:4:3: rules[0].level: ") and err.count("\n") == 1
    assert main(["rules", "check", "--profile", "Default", "--rules", str(tmp_path / "missing.json")]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'missing.json'}: no such file")


def test_a_cluster_scoped_rule_has_the_verdict_of_the_rule_it_came_from():
    from kaudit.detect.render import for_cluster

    policy = profile_policy("Datadog")
    rules = pack_rules()
    scoped = check(policy, [for_cluster(rule, "prod-eu") for rule in rules])
    assert [r.verdict for r in scoped] == [RESULTS["Datadog"][e.id].verdict for e in PACK]
