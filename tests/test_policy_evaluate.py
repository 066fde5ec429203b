"""Rule evaluation, checked against the semantics of k8s.io/apiserver pkg/audit/policy/checker.go.

Each corner case names the upstream function whose behaviour it pins down. Data is our own.
"""

from __future__ import annotations

import itertools
import json

import pytest

from kaudit.policy.evaluate import Evaluator, RequestAttributes, attributes_from_event
from kaudit.policy.loader import decode_rules
from kaudit.policy.model import Policy

ALICE = dict(user="alice@example.org", groups=("ops", "oncall"))

POD_GET = RequestAttributes(**ALICE, verb="get", resource_request=True, namespace="shop", resource="pods", name="web-1")
POD_LOG = RequestAttributes(**ALICE, verb="get", resource_request=True, namespace="shop", resource="pods",
                            subresource="log", name="web-1")
NODE_STATUS = RequestAttributes(**ALICE, verb="patch", resource_request=True, resource="nodes", subresource="status",
                                name="n1")
CLUSTER_ROLE = RequestAttributes(**ALICE, verb="update", resource_request=True, api_group="rbac.authorization.k8s.io",
                                 resource="clusterroles", name="admin")
DEPLOY_SCALE = RequestAttributes(**ALICE, verb="update", resource_request=True, namespace="shop", api_group="apps",
                                 resource="deployments", subresource="scale", name="web")
HEALTH = RequestAttributes(**ALICE, verb="get", resource_request=False, path="/healthz/etcd")
ANONYMOUS_POD = RequestAttributes(user=None, groups=(), verb="get", resource_request=True, namespace="shop",
                                  resource="pods", name="web-1")


def policy(*rules: dict, omit_stages=(), omit_managed_fields=False) -> Policy:
    decoded, _ = decode_rules([dict(r) for r in rules])
    return Policy(rules=decoded, omit_stages=tuple(omit_stages), omit_managed_fields=omit_managed_fields)


def level(pol: Policy, attrs: RequestAttributes) -> str:
    return Evaluator(pol).evaluate(attrs).level


def test_no_rule_matches_gives_none_with_policy_defaults():
    # checker.go EvaluatePolicyRule: fallback is DefaultAuditLevel (None) with the policy's omitStages
    # and the policy's omitManagedFields, and no rule.
    pol = policy({"level": "Metadata", "verbs": ["create"]}, omit_stages=["Panic"], omit_managed_fields=True)
    decision = Evaluator(pol).evaluate(POD_GET)
    assert (decision.level, decision.omit_stages, decision.omit_managed_fields, decision.rule) == (
        "None", frozenset({"Panic"}), True, None)


def test_rule_with_only_a_level_matches_every_request():
    # checker.go ruleMatches: empty lists constrain nothing, for resource and non-resource requests alike.
    pol = policy({"level": "Request"})
    for attrs in (POD_GET, POD_LOG, HEALTH, ANONYMOUS_POD, CLUSTER_ROLE):
        assert level(pol, attrs) == "Request"


def test_first_matching_rule_wins_and_reports_its_index():
    # checker.go EvaluatePolicyRule: rules are tried in order, the first match returns.
    pol = policy({"level": "None", "verbs": ["delete"]}, {"level": "RequestResponse", "resources": [{"resources": ["pods"]}]},
                 {"level": "Metadata"})
    decision = Evaluator(pol).evaluate(POD_GET)
    assert (decision.level, decision.rule) == ("RequestResponse", 1)
    assert Evaluator(pol).evaluate(HEALTH).rule == 2


def test_users_and_groups():
    # checker.go ruleMatches: users compares the username; userGroups needs any one group in common;
    # a request without user info never matches either.
    assert level(policy({"level": "Metadata", "users": ["alice@example.org"]}), POD_GET) == "Metadata"
    assert level(policy({"level": "Metadata", "users": ["bob"]}), POD_GET) == "None"
    assert level(policy({"level": "Metadata", "userGroups": ["nobody", "oncall"]}), POD_GET) == "Metadata"
    assert level(policy({"level": "Metadata", "userGroups": ["nobody"]}), POD_GET) == "None"
    assert level(policy({"level": "Metadata", "users": ["alice@example.org"]}), ANONYMOUS_POD) == "None"
    assert level(policy({"level": "Metadata", "userGroups": ["ops"]}), ANONYMOUS_POD) == "None"
    assert level(policy({"level": "Metadata", "users": ["alice@example.org"]}, {"level": "Request"}), ANONYMOUS_POD) == "Request"


def test_verbs_are_compared_exactly():
    # checker.go ruleMatches/hasString: plain string equality, so case matters.
    assert level(policy({"level": "Metadata", "verbs": ["get"]}), POD_GET) == "Metadata"
    assert level(policy({"level": "Metadata", "verbs": ["Get"]}), POD_GET) == "None"
    assert level(policy({"level": "Metadata", "verbs": ["get"]}), HEALTH) == "Metadata"  # non-resource too


@pytest.mark.parametrize(
    "pattern, attrs, expected",
    [
        # checker.go ruleMatchesResource: the policy names "resource/subresource" for subresources.
        ("pods", POD_GET, True),
        ("pods", POD_LOG, False),
        ("pods/log", POD_LOG, True),
        ("pods/log", POD_GET, False),
        # "*" matches any resource, subresources included.
        ("*", POD_LOG, True),
        ("*", POD_GET, True),
        # "*/log" matches that subresource of any resource, never a plain resource.
        ("*/log", POD_LOG, True),
        ("*/log", POD_GET, False),
        ("*/status", NODE_STATUS, True),
        # "pods/*" matches every subresource of pods AND plain pods (the TrimSuffix comparison).
        ("pods/*", POD_GET, True),
        ("pods/*", POD_LOG, True),
        ("pods/*", NODE_STATUS, False),
    ],
)
def test_resource_patterns(pattern, attrs, expected):
    pol = policy({"level": "Request", "resources": [{"group": "", "resources": [pattern]}]})
    assert (level(pol, attrs) == "Request") is expected


def test_groups_in_resource_entries():
    # checker.go ruleMatchesResource: "" is only the core group; an entry without resources matches
    # every resource of its group; group "*" matches every group (kube-apiserver 1.36+).
    core_pods = policy({"level": "Request", "resources": [{"group": "", "resources": ["deployments/scale"]}]})
    assert level(core_pods, DEPLOY_SCALE) == "None"
    whole_group = policy({"level": "Request", "resources": [{"group": "rbac.authorization.k8s.io"}]})
    assert level(whole_group, CLUSTER_ROLE) == "Request"
    assert level(whole_group, POD_GET) == "None"
    any_group = policy({"level": "Request", "resources": [{"group": "*", "resources": ["*/scale", "*/status"]}]})
    assert level(any_group, DEPLOY_SCALE) == "Request"
    assert level(any_group, NODE_STATUS) == "Request"
    assert level(any_group, CLUSTER_ROLE) == "None"


def test_resource_names_limit_the_entry():
    # checker.go ruleMatchesResource: resourceNames is checked per entry against the request's name.
    pol = policy({"level": "Request", "resources": [{"group": "rbac.authorization.k8s.io", "resources": ["clusterroles"],
                                                    "resourceNames": ["admin", "edit"]}]})
    assert level(pol, CLUSTER_ROLE) == "Request"
    viewer = RequestAttributes(**ALICE, verb="update", resource_request=True, api_group="rbac.authorization.k8s.io",
                               resource="clusterroles", name="view")
    assert level(pol, viewer) == "None"


def test_namespaces():
    # checker.go ruleMatchesResource: namespaces compare the request's namespace, where cluster-scoped
    # requests have ""; a rule with namespaces (and no resources) matches every resource there, and
    # never matches a non-resource request.
    in_shop = policy({"level": "Request", "namespaces": ["shop"]})
    assert level(in_shop, POD_GET) == "Request"
    assert level(in_shop, DEPLOY_SCALE) == "Request"
    assert level(in_shop, CLUSTER_ROLE) == "None"
    assert level(in_shop, HEALTH) == "None"
    cluster_scoped = policy({"level": "Request", "namespaces": [""]})
    assert level(cluster_scoped, CLUSTER_ROLE) == "Request"
    assert level(cluster_scoped, NODE_STATUS) == "Request"
    assert level(cluster_scoped, POD_GET) == "None"


def test_resource_rules_never_match_non_resource_requests_and_vice_versa():
    # checker.go ruleMatchesResource / ruleMatchesNonResource: IsResourceRequest decides.
    assert level(policy({"level": "Request", "resources": [{"resources": ["*"]}]}), HEALTH) == "None"
    assert level(policy({"level": "Request", "nonResourceURLs": ["*"]}), POD_GET) == "None"


@pytest.mark.parametrize(
    "spec, path, expected",
    [
        # checker.go pathMatches: "*" matches all; otherwise exact; a trailing "*" is a plain prefix
        # (no "/" boundary), so "/healthz*" matches "/healthzfoo" as well as "/healthz/etcd".
        ("*", "/anything/at/all", True),
        ("/healthz", "/healthz", True),
        ("/healthz", "/healthz/etcd", False),
        ("/healthz*", "/healthz/etcd", True),
        ("/healthz*", "/healthz", True),
        ("/healthz*", "/healthzfoo", True),
        ("/healthz/*", "/healthz", False),
        ("/version", "/version/", False),
    ],
)
def test_non_resource_urls(spec, path, expected):
    attrs = RequestAttributes(**ALICE, verb="get", resource_request=False, path=path)
    assert (level(policy({"level": "Metadata", "nonResourceURLs": [spec]}), attrs) == "Metadata") is expected


def test_policy_omit_stages_are_unioned_into_every_rule():
    # checker.go NewPolicyRuleEvaluator/unionStages.
    pol = policy({"level": "Request", "omitStages": ["ResponseStarted"]}, omit_stages=["RequestReceived"])
    assert Evaluator(pol).evaluate(POD_GET).omit_stages == frozenset({"RequestReceived", "ResponseStarted"})
    assert Evaluator(policy({"level": "Request", "omitStages": ["Panic"]})).evaluate(POD_GET).omit_stages == {"Panic"}


@pytest.mark.parametrize("policy_default", [False, True])
@pytest.mark.parametrize("rule_value, expected", [(None, "inherit"), (True, True), (False, False)])
def test_rule_omit_managed_fields_overrides_policy(policy_default, rule_value, expected):
    # checker.go isOmitManagedFields: a rule's value, when set, wins over the policy's.
    rule = {"level": "Request"} if rule_value is None else {"level": "Request", "omitManagedFields": rule_value}
    decision = Evaluator(policy(rule, omit_managed_fields=policy_default)).evaluate(POD_GET)
    assert decision.omit_managed_fields == (policy_default if expected == "inherit" else expected)


def test_attributes_from_event():
    event = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "get", "requestURI": "/livez?verbose=1",
        "user": {"username": "system:anonymous", "groups": ["system:unauthenticated"]},
    }
    attrs = attributes_from_event(event)
    assert (attrs.resource_request, attrs.path, attrs.user, attrs.groups) == (
        False, "/livez", "system:anonymous", ("system:unauthenticated",))
    event["objectRef"] = {"resource": "pods", "namespace": "a", "name": "p", "subresource": "exec", "apiVersion": "v1"}
    attrs = attributes_from_event(event)
    assert (attrs.resource_request, attrs.resource, attrs.subresource, attrs.api_group) == (True, "pods", "exec", "")
    # An objectRef without a resource (kube-apiserver omits it for non-resource requests) is non-resource.
    assert not attributes_from_event({"verb": "get", "requestURI": "/api", "objectRef": {}}).resource_request
    assert attributes_from_event({"verb": "get", "requestURI": "/api"}).user is None


def test_event_details_that_the_policy_did_not_see():
    # pkg/audit/request.go LogRequestObject fills objectRef.name in from a create's body after the
    # policy was evaluated on the URL's attributes (no name for a create), so resourceNames rules
    # never match a plain create; a create on a subresource (pods/x/eviction) has the name in its URL.
    pol = policy({"level": "Request", "resources": [{"group": "", "resources": ["pods", "pods/eviction"],
                                                     "resourceNames": ["web-1"]}]})
    evaluator = Evaluator(pol)
    create = {"verb": "create", "user": {"username": "u"},
              "objectRef": {"resource": "pods", "namespace": "shop", "name": "web-1"}}
    assert evaluator.evaluate_event(create).level == "None"
    assert attributes_from_event(create).name == ""
    evict = {"verb": "create", "user": {"username": "u"},
             "objectRef": {"resource": "pods", "namespace": "shop", "name": "web-1", "subresource": "eviction"}}
    assert evaluator.evaluate_event(evict).level == "Request"
    # authorizer attributes carry the URL's decoded path.
    assert attributes_from_event({"verb": "get", "requestURI": "/logs/a%20b.log?x=%20"}).path == "/logs/a b.log"


@pytest.mark.parametrize("bad", [[], {"verb": 3}, {"verb": False}, {"user": "alice"}, {"user": {"groups": "ops"}},
                                 {"user": {"username": False}}, {"user": {"groups": [1]}},
                                 {"user": {"groups": ["ops", ["nested"]]}}, {"user": {"groups": ["ops", None]}},
                                 {"objectRef": "pods"}, {"objectRef": {"resource": ["pods"]}},
                                 {"objectRef": {"resource": "pods", "namespace": 0}},
                                 {"objectRef": {"resource": "pods", "name": ["p"]}},
                                 {"verb": "create", "objectRef": {"resource": "pods", "name": 7}}, {"requestURI": 5}])
def test_malformed_events_raise_value_error(bad):
    # The first policy looks at every attribute; the second at none, and still a wrongly typed
    # event is malformed (the cache keys leave unused attributes out, so they are checked apart).
    evaluator = Evaluator(policy({"level": "Metadata", "userGroups": ["ops"]},
                                 {"level": "None", "namespaces": ["a"],
                                  "resources": [{"group": "", "resources": ["pods"], "resourceNames": ["p"]}]},
                                 {"level": "Request"}))
    with pytest.raises(ValueError):
        evaluator.evaluate_event(bad)
    blind = Evaluator(policy({"level": "None", "verbs": ["watch"]}, {"level": "Metadata"}))
    with pytest.raises(ValueError):
        blind.evaluate_event(bad)


@pytest.mark.parametrize("field, value", [("username", 5), ("groups", [1]), ("groups", "ops"),
                                          ("namespace", 0), ("name", ["p"])])
def test_a_cached_decision_does_not_hide_a_malformed_field_the_policy_ignores(field, value):
    blind = Evaluator(policy({"level": "Metadata"}))
    good = {"verb": "get", "user": {"username": "u", "groups": ["g"]},
            "objectRef": {"resource": "pods", "namespace": "a", "name": "p"}}
    blind.evaluate_event(good)  # caches the decision for the well-formed part of the key
    bad = {**good, "user": dict(good["user"]), "objectRef": dict(good["objectRef"])}
    (bad["user"] if field in ("username", "groups") else bad["objectRef"])[field] = value
    with pytest.raises(ValueError):
        blind.evaluate_event(bad)
    with pytest.raises(ValueError):
        attributes_from_event(bad)


def test_cached_event_path_agrees_with_plain_evaluation():
    # evaluate_event caches on a reduced key; compare it with evaluate() over a grid of events.
    pol = policy(
        {"level": "None", "users": ["system:kube-proxy"], "verbs": ["watch"]},
        {"level": "Metadata", "resources": [{"group": "", "resources": ["secrets"], "resourceNames": ["db"]}]},
        {"level": "RequestResponse", "namespaces": ["prod"], "resources": [{"group": "apps", "resources": ["*/scale"]}]},
        {"level": "None", "nonResourceURLs": ["/healthz*"]},
        {"level": "Request", "userGroups": ["devs"]},
    )
    evaluator = Evaluator(pol)
    users = [None, {"username": "system:kube-proxy"}, {"username": "bob", "groups": ["devs"]}]
    refs = [None, {"resource": "secrets", "name": "db", "namespace": "prod"}, {"resource": "secrets", "name": "x"},
            {"resource": "deployments", "subresource": "scale", "apiGroup": "apps", "namespace": "prod"}]
    for user, ref, verb, uri in itertools.product(users, refs, ["get", "watch"], ["/healthz", "/api/v1?x=1"]):
        event = {"verb": verb, "requestURI": uri}
        if user is not None:
            event["user"] = user
        if ref is not None:
            event["objectRef"] = ref
        for _ in range(2):  # second call hits the cache
            assert evaluator.evaluate_event(event) is evaluator.evaluate(attributes_from_event(event))


# --- The upstream checker test matrix (checker_test.go testAuditLevel, TestChecker,
# TestCheckerPolicyOmitStages, TestUnionStages), case for case, with our own requests and rules.

CAROL = dict(user="carol@example.com", groups=("people", "builders"))
MATRIX_REQUESTS = {
    "namespaced": RequestAttributes(**CAROL, verb="get", resource_request=True, namespace="shop", resource="pods",
                                    name="web"),
    "cluster": RequestAttributes(**CAROL, verb="get", resource_request=True, api_group="rbac.authorization.k8s.io",
                                 resource="clusterroles", name="edit"),
    "non_resource": RequestAttributes(**CAROL, verb="get", resource_request=False, path="/logs/apiserver.log"),
    "subresource": RequestAttributes(**CAROL, verb="get", resource_request=True, namespace="shop", resource="pods",
                                     subresource="log", name="web"),
    "anonymous": RequestAttributes(user=None, groups=(), verb="get", resource_request=True, namespace="shop",
                                   resource="pods", name="web"),
    "role_status_update": RequestAttributes(**CAROL, verb="update", resource_request=True,
                                            api_group="rbac.authorization.k8s.io", resource="clusterroles",
                                            subresource="status", name="reviewer"),
}
MATRIX_RULES = {
    "everything": {"level": "Metadata"},
    "creates": {"level": "Request", "verbs": ["create"]},
    "carol": {"level": "Metadata", "users": ["carol@example.com"]},
    "people": {"level": "Metadata", "userGroups": ["people"]},
    "service_accounts": {"level": "Request", "userGroups": ["system:serviceaccounts"]},
    "get_pods": {"level": "RequestResponse", "verbs": ["get"], "resources": [{"resources": ["pods"]}]},
    "get_pod_logs": {"level": "Request", "verbs": ["get"], "resources": [{"resources": ["pods/log"]}]},
    "get_any": {"level": "Request", "verbs": ["get"], "resources": [{"resources": ["*"]}]},
    "get_any_log": {"level": "Request", "verbs": ["get"], "resources": [{"resources": ["*/log"]}]},
    "get_pods_any_sub": {"level": "Request", "verbs": ["get"], "resources": [{"resources": ["pods/*"]}]},
    "get_cluster_roles": {"level": "RequestResponse", "verbs": ["get"], "namespaces": [""],
                          "resources": [{"group": "rbac.authorization.k8s.io", "resources": ["clusterroles"]}]},
    "update_status_any_group": {"level": "RequestResponse", "verbs": ["update"],
                                "resources": [{"group": "*", "resources": ["*/status"]}]},
    "get_log_urls": {"level": "RequestResponse", "verbs": ["get"], "nonResourceURLs": ["/logs*"]},
    "get_metrics": {"level": "Request", "verbs": ["get"], "nonResourceURLs": ["/metrics"]},
    "edit_role_by_name": {"level": "Request", "resources": [{"group": "rbac.authorization.k8s.io",
                                                             "resources": ["clusterroles"], "resourceNames": ["edit"]}]},
    "omit_received": {"level": "Request", "omitStages": ["RequestReceived"]},
    "panic_only": {"level": "Request", "omitStages": ["RequestReceived", "ResponseStarted", "ResponseComplete"]},
}
# (request, expected level, rules in order): testAuditLevel's rows.
LEVEL_MATRIX = [
    ("namespaced", "Metadata", ["everything"]),
    ("namespaced", "None", ["creates"]),
    ("namespaced", "Metadata", ["carol"]),
    ("namespaced", "Metadata", ["people"]),
    ("namespaced", "None", ["service_accounts"]),
    ("namespaced", "RequestResponse", ["get_pods"]),
    ("namespaced", "None", ["get_cluster_roles"]),
    ("namespaced", "None", ["get_log_urls"]),
    ("namespaced", "None", ["get_metrics"]),
    ("namespaced", "Metadata", ["get_metrics", "service_accounts", "everything"]),
    ("namespaced", "RequestResponse", ["get_metrics", "get_pods", "everything"]),
    ("namespaced", "RequestResponse", ["get_pod_logs", "get_pods"]),
    ("cluster", "Metadata", ["everything"]),
    ("cluster", "None", ["creates"]),
    ("cluster", "Metadata", ["carol"]),
    ("cluster", "Metadata", ["people"]),
    ("cluster", "None", ["service_accounts"]),
    ("cluster", "None", ["get_pods"]),
    ("cluster", "RequestResponse", ["get_cluster_roles"]),
    ("cluster", "Request", ["edit_role_by_name", "get_cluster_roles"]),
    ("cluster", "None", ["get_log_urls"]),
    ("cluster", "None", ["get_metrics"]),
    ("cluster", "Metadata", ["get_metrics", "service_accounts", "everything"]),
    ("cluster", "RequestResponse", ["get_metrics", "get_cluster_roles", "everything"]),
    ("cluster", "None", ["get_pod_logs", "get_pods"]),
    ("non_resource", "Metadata", ["everything"]),
    ("non_resource", "None", ["creates"]),
    ("non_resource", "Metadata", ["carol"]),
    ("non_resource", "Metadata", ["people"]),
    ("non_resource", "None", ["service_accounts"]),
    ("non_resource", "None", ["get_pods"]),
    ("non_resource", "None", ["get_cluster_roles"]),
    ("non_resource", "RequestResponse", ["get_log_urls"]),
    ("non_resource", "None", ["get_metrics"]),
    ("non_resource", "Metadata", ["get_metrics", "service_accounts", "everything"]),
    ("non_resource", "RequestResponse", ["get_log_urls", "get_cluster_roles", "everything"]),
    ("non_resource", "None", ["get_pod_logs", "get_pods"]),
    ("subresource", "Request", ["get_pod_logs", "get_pods"]),
    ("subresource", "Request", ["get_any"]),
    ("subresource", "Request", ["get_any_log"]),
    ("subresource", "Request", ["get_pods_any_sub"]),
    ("anonymous", "None", ["carol"]),
    ("anonymous", "Metadata", ["carol", "everything"]),
    ("anonymous", "None", ["people"]),
    ("anonymous", "Metadata", ["people", "everything"]),
    ("role_status_update", "RequestResponse", ["update_status_any_group"]),
]
TWO_POLICY_STAGES = ("RequestReceived", "ResponseStarted")


def matrix_decision(request: str, rule_names: list[str], policy_stages=()):
    pol = policy(*(MATRIX_RULES[name] for name in rule_names), omit_stages=policy_stages)
    return Evaluator(pol).evaluate(MATRIX_REQUESTS[request])


@pytest.mark.parametrize("policy_stages", [(), TWO_POLICY_STAGES], ids=["no-policy-stages", "policy-stages"])
@pytest.mark.parametrize("request_name, expected, rule_names", LEVEL_MATRIX)
def test_upstream_level_matrix(request_name, expected, rule_names, policy_stages):
    # None of these rules omits stages, so the result carries exactly the policy's stages.
    decision = matrix_decision(request_name, rule_names, policy_stages)
    assert decision.level == expected
    assert decision.omit_stages == frozenset(policy_stages)
    # The audit-event path (what `kaudit policy eval` uses) decides the same.
    pol = policy(*(MATRIX_RULES[name] for name in rule_names), omit_stages=policy_stages)
    assert Evaluator(pol).evaluate_event(event_of(MATRIX_REQUESTS[request_name])) == decision


def event_of(attrs: RequestAttributes) -> dict:
    """The audit Event kube-apiserver writes for a request with these attributes."""
    event: dict = {"verb": attrs.verb, "requestURI": attrs.path or "/api"}
    if attrs.user is not None:
        event["user"] = {"username": attrs.user, "groups": list(attrs.groups)}
    if attrs.resource_request:
        ref = {"resource": attrs.resource, "namespace": attrs.namespace, "apiGroup": attrs.api_group,
               "subresource": attrs.subresource, "name": attrs.name}
        event["objectRef"] = {key: value for key, value in ref.items() if value}
    return event


RR, RS, RC = "RequestReceived", "ResponseStarted", "ResponseComplete"


@pytest.mark.parametrize("policy_stages, request_name, rule_names, expected_level, expected_stages", [
    # TestChecker: a rule's own omitStages, no policy-level ones.
    ((), "namespaced", ["omit_received", "get_pods", "everything"], "Request", {RR}),
    ((), "namespaced", ["panic_only", "get_pods", "everything"], "Request", {RR, RS, RC}),
    ((), "cluster", ["omit_received", "get_pods", "everything"], "Request", {RR}),
    ((), "cluster", ["panic_only", "get_pods", "everything"], "Request", {RR, RS, RC}),
    ((), "non_resource", ["omit_received", "get_pods", "everything"], "Request", {RR}),
    ((), "non_resource", ["panic_only", "get_pods", "everything"], "Request", {RR, RS, RC}),
    # TestCheckerPolicyOmitStages: the policy's stages are unioned into the matching rule's.
    (TWO_POLICY_STAGES, "namespaced", ["omit_received", "get_pods", "everything"], "Request", {RR, RS}),
    (TWO_POLICY_STAGES, "namespaced", ["panic_only", "get_pods", "everything"], "Request", {RR, RS, RC}),
    (TWO_POLICY_STAGES, "cluster", ["omit_received", "get_pods", "everything"], "Request", {RR, RS}),
    (TWO_POLICY_STAGES, "cluster", ["panic_only", "get_pods", "everything"], "Request", {RR, RS, RC}),
    (TWO_POLICY_STAGES, "non_resource", ["everything", "omit_received", "get_pods"], "Metadata", {RR, RS}),
    (TWO_POLICY_STAGES, "non_resource", ["panic_only", "get_pods", "everything"], "Request", {RR, RS, RC}),
])
def test_upstream_omit_stages_rows(policy_stages, request_name, rule_names, expected_level, expected_stages):
    decision = matrix_decision(request_name, rule_names, policy_stages)
    assert (decision.level, decision.omit_stages) == (expected_level, frozenset(expected_stages))


@pytest.mark.parametrize("policy_stages, rule_stages, expected", [
    # TestUnionStages, through the evaluator: set union, repeats collapse.
    ((), (), set()),
    ((RR,), (), {RR}),
    ((RR,), (RR,), {RR}),
    ((RR,), (RS,), {RR, RS}),
    ((RR, RR), (RR, RR), {RR}),
    ((RR, RS), ("Panic", RR), {RR, RS, "Panic"}),
    ((), (RR,), {RR}),
])
def test_upstream_stage_union(policy_stages, rule_stages, expected):
    pol = policy({"level": "Metadata", "omitStages": list(rule_stages)}, omit_stages=policy_stages)
    decision = Evaluator(pol).evaluate(POD_GET)
    assert decision.omit_stages == frozenset(expected)
    assert json.loads(Evaluator(pol).decision_json(decision))["omitStages"] == sorted(expected)  # no repeats


def test_event_cache_is_bounded_and_folding_users_keeps_every_answer(monkeypatch):
    # A log with many distinct users must not grow the cache without bound (500k entries took
    # hundreds of MB), and folding usernames no rule lists into one key must not change any
    # decision, for users and userGroups rules alike.
    from kaudit.policy import evaluate as evaluate_module

    pol = policy({"level": "None", "users": ["system:kube-proxy", ""], "verbs": ["watch"]},
                 {"level": "Request", "userGroups": ["devs", "ops"], "resources": [{"resources": ["pods"]}]},
                 {"level": "RequestResponse", "userGroups": ["ops"]},
                 {"level": "Metadata"})
    group_sets = [["staff"], ["staff", "devs"], ["ops"], []]
    many_users = [{"verb": verb, "requestURI": "/api", "objectRef": {"resource": "pods", "namespace": "a"},
                   **({} if i % 7 == 0 else {"user": {"username": ["", "system:kube-proxy", f"user{i}"][i % 3],
                                                      "groups": group_sets[i % 4]}})}
                  for i in range(600) for verb in ("get", "watch")]
    evaluator = Evaluator(pol)
    for event in many_users:
        assert evaluator.evaluate_event(event) is evaluator.evaluate(attributes_from_event(event))
    # 400 distinct usernames, but the rules tell apart only: no user, "", kube-proxy or any other
    # user; four group lists; two verbs.
    assert len(evaluator._cache) <= 4 * 4 * 2

    monkeypatch.setattr(evaluate_module, "_CACHE_LIMIT", 8)
    evaluator = Evaluator(pol)
    for event in many_users:
        assert evaluator.evaluate_event(event) is evaluator.evaluate(attributes_from_event(event))
        assert len(evaluator._cache) <= 8


def test_cached_decisions_fold_only_the_namespaces_and_names_no_rule_lists():
    # The decision cache keys a request on its namespace and name only as far as the rules list
    # them; every other value shares one entry. Each event below must still get its own rule.
    from kaudit.auditlog import decode_event
    from kaudit.policy.loader import load_policy

    policy = load_policy("""
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: RequestResponse
  namespaces: [""]
  resources: [{group: "", resources: [namespaces]}]
- level: Request
  namespaces: [team-a]
  resources: [{group: "", resources: [configmaps], resourceNames: [settings, ""]}]
- level: Metadata
""").policy
    evaluator = Evaluator(policy)

    def level(verb, ref):
        return evaluator.decide(decode_event(json.dumps({"verb": verb, "objectRef": ref}).encode())).level

    # Cluster-scoped: no namespace member is the namespace "" the first rule lists.
    assert level("get", {"resource": "namespaces", "name": "x"}) == "RequestResponse"
    assert level("get", {"resource": "namespaces", "namespace": "team-b", "name": "x"}) == "Metadata"
    assert level("update", {"resource": "configmaps", "namespace": "team-a", "name": "settings"}) == "Request"
    assert level("update", {"resource": "configmaps", "namespace": "team-a", "name": "other"}) == "Metadata"
    assert level("update", {"resource": "configmaps", "namespace": "team-b", "name": "settings"}) == "Metadata"
    # A create is evaluated before its name is known (kube-apiserver sees the name ""), whatever
    # name the logged event then carries; an update with no name is not a create.
    assert level("create", {"resource": "configmaps", "namespace": "team-a", "name": "other"}) == "Request"
    assert level("create", {"resource": "configmaps", "namespace": "team-a", "name": "settings"}) == "Request"
    assert level("update", {"resource": "configmaps", "namespace": "team-a"}) == "Request"
    assert level("update", {"resource": "configmaps", "namespace": "team-c", "name": "x"}) == "Metadata"
