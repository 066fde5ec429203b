"""The auditor is audited: every composed policy starts with kaudit's self-audit rules.

Levels are what kube-apiserver would decide (the engine follows k8s.io/apiserver's checker: first
matching rule; a create has no name when the rule is picked). The requests are the ones someone
lowering the policy sends: an edit of the policy ConfigMap, of the AuditCollection or its status,
of the installer DaemonSet, of RBAC, and the borrowing of kaudit's identity.
"""

from __future__ import annotations

import pytest

from kaudit.policy import FIXED_PROFILES, PROFILES, PolicyOptions, SelfAudit, compose_policy, lint_policy, load_policy
from kaudit.policy.evaluate import Evaluator, RequestAttributes
from kaudit.render.core import DEFAULT_NAMESPACE
from kaudit.render.policy import self_audit

NS = "kaudit-system"
CONFIG_MAP = "kaudit-cluster-policy"
ADMIN = dict(user="mallory", groups=("system:authenticated",))


def evaluator(**options) -> Evaluator:
    return Evaluator(load_policy(compose_policy(PolicyOptions(**options)).text).policy)


def req(verb, resource, *, group="", ns=NS, sub="", name="", user=ADMIN["user"], groups=ADMIN["groups"]):
    return RequestAttributes(user=user, groups=groups, verb=verb, resource_request=True, namespace=ns,
                             api_group=group, resource=resource, subresource=sub, name=name)


TAMPERING = {  # request -> why it must be logged with bodies
    "update policy ConfigMap": req("update", "configmaps", name=CONFIG_MAP),
    "patch policy ConfigMap": req("patch", "configmaps", name=CONFIG_MAP),
    "delete policy ConfigMap": req("delete", "configmaps", name=CONFIG_MAP),
    "patch AuditCollection": req("patch", "auditcollections", group="kaudit.dev", ns="", name="cluster"),
    "patch AuditCollection status": req("patch", "auditcollections", group="kaudit.dev", ns="", sub="status",
                                        name="cluster"),
    "delete the CRD": req("delete", "customresourcedefinitions", group="apiextensions.k8s.io", ns="",
                          name="auditcollections.kaudit.dev"),
    "patch installer DaemonSet": req("patch", "daemonsets", group="apps", name="kaudit-cluster-policy-installer"),
    "patch operator Deployment": req("patch", "deployments", group="apps", name="kaudit"),
    "create a pod in the namespace": req("create", "pods"),
    "create a RoleBinding there": req("create", "rolebindings", group="rbac.authorization.k8s.io"),
    "create a ClusterRoleBinding": req("create", "clusterrolebindings", group="rbac.authorization.k8s.io", ns=""),
}
BORROWING = {
    "token for the operator": req("create", "serviceaccounts", sub="token", name="kaudit"),
    "exec into the installer (POST)": req("create", "pods", sub="exec", name="kaudit-cluster-policy-installer-x"),
    "exec into the installer (WebSocket)": req("get", "pods", sub="exec", name="kaudit-cluster-policy-installer-x"),
}


# A platform's own policy (EKS) has no self-audit rules: the platform applies it as it is.
KAUDIT_PROFILES = [profile for profile in PROFILES if profile not in FIXED_PROFILES]


@pytest.mark.parametrize("profile", KAUDIT_PROFILES)
def test_every_profile_logs_tampering_with_bodies_and_borrowing_with_metadata(profile):
    ev = evaluator(profile=profile)
    assert {what: ev.evaluate(r).level for what, r in TAMPERING.items()} == dict.fromkeys(TAMPERING, "RequestResponse")
    assert {what: ev.evaluate(r).level for what, r in BORROWING.items()} == dict.fromkeys(BORROWING, "Metadata")
    assert all(ev.evaluate(r).rule < 3 for r in (*TAMPERING.values(), *BORROWING.values()))


@pytest.mark.parametrize("profile", KAUDIT_PROFILES)
def test_no_secret_body_and_no_other_configmap_body_is_logged_by_the_self_audit_rules(profile):
    ev = evaluator(profile=profile)
    for verb in ("create", "update", "patch", "delete", "get"):
        for request in (req(verb, "secrets", name="datadog-secret"), req(verb, "secrets"),
                        req(verb, "configmaps", name="other"), req(verb, "secrets", ns="")):
            decision = ev.evaluate(request)
            assert decision.level in ("None", "Metadata") or decision.rule >= 3, (verb, request, decision)
    if profile in ("Default", "WriteRequestBodies", "AllRequestBodies"):  # they pin sensitive resources
        assert ev.evaluate(req("update", "secrets", name=CONFIG_MAP)).level == "Metadata"


def test_a_recreated_policy_config_map_falls_to_the_profile_at_metadata():
    # kube-apiserver picks the rule before it reads the body: a create has no name, so the named
    # entry cannot match it. The Default profile logs it at Metadata (ConfigMaps pinned there).
    # A recorded create carries the name (filled in from the body afterwards); the engine drops it.
    recorded = {"apiVersion": "audit.k8s.io/v1", "kind": "Event", "verb": "create", "user": {"username": "mallory"},
                "requestURI": f"/api/v1/namespaces/{NS}/configmaps",
                "objectRef": {"resource": "configmaps", "namespace": NS, "name": CONFIG_MAP, "apiVersion": "v1"}}
    decision = evaluator().evaluate_event(recorded)
    assert decision.level == "Metadata" and decision.rule >= 3
    assert evaluator().evaluate_event({**recorded, "verb": "update"}).level == "RequestResponse"


def test_other_namespaces_and_other_objects_keep_the_profiles_levels():
    ev, plain = evaluator(), evaluator(self_audit=None)
    for request in (req("patch", "configmaps", ns="shop", name=CONFIG_MAP), req("patch", "daemonsets", group="apps", ns="shop"),
                    req("get", "pods", sub="exec", ns="shop"), req("get", "auditcollections", group="kaudit.dev", ns=""),
                    req("patch", "leases", group="coordination.k8s.io")):
        assert ev.evaluate(request).level == plain.evaluate(request).level, request


def test_custom_rules_cannot_come_before_the_self_audit_rules():
    hide = ({"level": "None", "users": ["mallory"]},)
    ev = evaluator(rules=hide)
    assert ev.evaluate(TAMPERING["patch policy ConfigMap"]).level == "RequestResponse"
    assert ev.evaluate(req("create", "pods", ns="shop")).level == "None"  # elsewhere the custom rule decides
    assert evaluator(rules=hide, self_audit=None).evaluate(TAMPERING["patch policy ConfigMap"]).level == "None"


def test_self_audit_false_leaves_the_profile_as_it_was():
    text = compose_policy(PolicyOptions(profile="None", self_audit=None)).text
    assert load_policy(text).policy.rules[0].level == "None" and len(load_policy(text).policy.rules) == 1


def test_the_rules_name_the_namespace_and_config_map_they_are_given():
    ev = evaluator(self_audit=SelfAudit(namespace="ops", policy_config_map="kaudit-prod-policy"))
    assert ev.evaluate(req("patch", "configmaps", ns="ops", name="kaudit-prod-policy")).level == "RequestResponse"
    assert ev.evaluate(req("patch", "configmaps", ns=NS, name=CONFIG_MAP)).level == "Metadata"


def test_the_engine_defaults_are_the_renderers_names():
    assert SelfAudit() == self_audit("cluster", DEFAULT_NAMESPACE)


def test_lint_accepts_a_named_config_map_body_but_not_a_secret_or_an_unnamed_one():
    def exposed(entry: dict) -> list[str]:
        policy = load_policy({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [
            {"level": "RequestResponse", "resources": [entry]}, {"level": "Metadata"}]}).policy
        return [w.path for w in lint_policy(policy) if "logs bodies" in w.message]

    assert exposed({"group": "", "resources": ["configmaps"], "resourceNames": [CONFIG_MAP]}) == []
    assert exposed({"group": "", "resources": ["configmaps"]}) == ["rules[0].level"]
    assert exposed({"group": "", "resources": ["secrets"], "resourceNames": ["s"]}) == ["rules[0].level"]


def test_a_custom_rule_shadowed_by_the_self_audit_rules_is_named_by_the_users_index():
    document = compose_policy(PolicyOptions(rules=(
        {"level": "Request", "resources": [{"group": "", "resources": ["pods"]}]},
        {"level": "Metadata", "verbs": ["patch"], "resources": [{"group": "kaudit.dev", "resources": ["auditcollections"]}]},
    )))
    shadowed = [str(w) for w in document.warnings if "never matches" in w.message]
    assert shadowed == ["rules[1]: never matches: every request it matches is matched first by kaudit's "
                        "self-audit rules (spec.policy.auditKaudit)"]


def _collection(policy: dict) -> dict:
    return {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": "prod"},
            "spec": {"policy": policy, "agent": {"mode": "None"}}}


def test_render_names_the_operator_namespace_and_the_collections_config_map():
    from kaudit.render import render

    rendered = render(_collection({"profile": "None"}), namespace="ops")
    ev = Evaluator(load_policy(rendered.policy.text).policy)
    assert ev.evaluate(req("patch", "configmaps", ns="ops", name="kaudit-prod-policy")).level == "RequestResponse"
    [config_map] = [o for o in rendered.objects if o["kind"] == "ConfigMap"]
    assert config_map["metadata"]["name"] == "kaudit-prod-policy"  # the name the rule gives
    assert not [w for w in rendered.warnings if w.path == "spec.policy.auditKaudit"]


def test_audit_kaudit_false_is_explicit_and_said_in_the_warnings_and_status():
    from kaudit.reconcile.service import rendered_status
    from kaudit.render import render

    body = _collection({"profile": "None", "auditKaudit": False})
    rendered = render(body, namespace="ops")
    assert load_policy(rendered.policy.text).policy.rules[0].level == "None"
    assert len(load_policy(rendered.policy.text).policy.rules) == 1
    [warning] = [w for w in rendered.warnings if w.path == "spec.policy.auditKaudit"]
    assert "not recorded" in warning.message
    status = rendered_status(rendered)
    assert status["policy"]["auditKaudit"] is False
    assert any(w.startswith("spec.policy.auditKaudit: false") for w in status["warnings"])
    assert rendered_status(render(_collection({}), namespace="ops"))["policy"]["auditKaudit"] is True


def test_audit_kaudit_must_be_a_boolean():
    from kaudit.api.spec import parse_collection
    from kaudit.errors import InvalidInput

    with pytest.raises(InvalidInput) as info:
        parse_collection(_collection({"auditKaudit": "no"}))
    assert [str(e) for e in info.value.errors] == ['spec.policy.auditKaudit: Invalid value: "no": expected true or false']
