"""Profile EKS: the policy Amazon EKS applies (facts 21), composed as EKS applies it.

The expectations are read off the upstream GCE reference policy (kubernetes'
cluster/gce/gci/configure-helper.sh, create-master-audit-policy) and the aws-auth rule of the EKS
best-practices guide, request by request, not off kaudit's output.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from kaudit.errors import InvalidInput
from kaudit.policy import PolicyOptions, SelfAudit, compose_policy, load_policy
from kaudit.policy.evaluate import Evaluator, RequestAttributes


def eks_policy(**options):
    result = load_policy(compose_policy(PolicyOptions(profile="EKS", **options)).text)
    assert result.ok, result.errors
    return result.policy


def level(request: RequestAttributes) -> tuple[str, tuple[str, ...]]:
    decision = Evaluator(eks_policy()).evaluate(request)
    return decision.level, tuple(decision.omit_stages)


def res(verb, resource, *, group="", ns="shop", sub="", name="x", user="dev@example.org", groups=("devs",)):
    return RequestAttributes(user=user, groups=groups, verb=verb, resource_request=True, namespace=ns,
                             api_group=group, resource=resource, subresource=sub, name=name)


def url(path, verb="get"):
    return RequestAttributes(user="probe", groups=(), verb=verb, resource_request=False, path=path)


NO_RECEIVED = ("RequestReceived",)
CASES = {
    # the aws-auth rule: changes with bodies, whoever makes them (the autoscaler's own ConfigMap rule too)
    "update aws-auth": (res("update", "configmaps", ns="kube-system", name="aws-auth"), "RequestResponse"),
    "delete aws-auth": (res("delete", "configmaps", ns="kube-system", name="aws-auth"), "RequestResponse"),
    "autoscaler updates aws-auth": (res("update", "configmaps", ns="kube-system", name="aws-auth",
                                        user="cluster-autoscaler"), "RequestResponse"),
    # reads of aws-auth and every other ConfigMap: the sensitive-resources rule, Metadata
    "get aws-auth": (res("get", "configmaps", ns="kube-system", name="aws-auth"), "Metadata"),
    "update other configmap": (res("update", "configmaps", ns="kube-system", name="coredns"), "Metadata"),
    "aws-auth elsewhere": (res("update", "configmaps", ns="shop", name="aws-auth"), "Metadata"),
    "read secret": (res("get", "secrets"), "Metadata"),
    "token request": (res("create", "serviceaccounts", sub="token"), "Metadata"),
    "token review": (res("create", "tokenreviews", group="authentication.k8s.io", ns=""), "Metadata"),
    # known API groups: reads with the request, everything else with request and response
    "create pod": (res("create", "pods"), "RequestResponse"),
    "get pod": (res("get", "pods"), "Request"),
    "patch deployment": (res("patch", "deployments", group="apps"), "RequestResponse"),
    "create clusterrolebinding": (res("create", "clusterrolebindings", group="rbac.authorization.k8s.io", ns=""),
                                  "RequestResponse"),
    "exec (WebSocket get)": (res("get", "pods", sub="exec"), "Request"),
    # not a known group: the catch-all, Metadata
    "custom resource": (res("create", "widgets", group="example.com"), "Metadata"),
    "events.k8s.io event": (res("create", "events", group="events.k8s.io"), "Metadata"),
    "lease renewal": (res("update", "leases", group="coordination.k8s.io"), "Metadata"),
    "kaudit's own resource": (res("patch", "auditcollections", group="kaudit.dev", ns=""), "Metadata"),
    # dropped
    "core event": (res("create", "events"), "None"),
    "kube-proxy watch": (res("watch", "endpoints", user="system:kube-proxy"), "None"),
    "kubelet node get": (res("get", "nodes", ns="", user="system:node:n1", groups=("system:nodes",)), "None"),
    "controller endpoints": (res("update", "endpoints", ns="kube-system", user="system:kube-scheduler"), "None"),
    "hpa metrics": (res("list", "pods", group="metrics.k8s.io", user="system:kube-controller-manager"), "None"),
    "healthz": (url("/healthz/etcd"), "None"),
    "version": (url("/version"), "None"),
    # not dropped by the reference policy
    "metrics": (url("/metrics"), "Metadata"),
    "livez": (url("/livez"), "Metadata"),
    # request only: node status from kubelets, namespace deletion
    "kubelet node status": (res("patch", "nodes", ns="", sub="status", user="system:node:n1",
                                groups=("system:nodes",)), "Request"),
    "namespace controller": (res("deletecollection", "pods",
                                 user="system:serviceaccount:kube-system:namespace-controller"), "Request"),
}


@pytest.mark.parametrize("case", CASES)
def test_eks_levels_are_the_reference_policys(case):
    request, expected = CASES[case]
    got, omitted = level(request)
    assert got == expected
    if expected != "None":  # every logging rule upstream omits RequestReceived
        assert omitted == NO_RECEIVED


def test_eks_is_composed_as_eks_applies_it_whatever_the_defaults():
    policy = eks_policy()
    assert policy.omit_stages == () and policy.omit_managed_fields is False  # upstream sets neither
    assert len(policy.rules) == 18  # the reference policy's 17 rules and the aws-auth rule
    # kaudit's choices (self-audit rules, its omitStages) are not EKS's: the options' defaults do not apply
    assert eks_policy(self_audit=SelfAudit(), omit_stages=("RequestReceived", "ResponseStarted"),
                      omit_managed_fields=True) == policy


def test_eks_refuses_changes_naming_the_field():
    with pytest.raises(InvalidInput) as raised:
        compose_policy(PolicyOptions(profile="EKS", omit_read_only=True, rules=({"level": "None"},)))
    assert [e.path for e in raised.value.errors] == ["rules", "omitReadOnly"]
    assert all("cannot be changed" in e.message for e in raised.value.errors)


def kaudit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kaudit", *args], capture_output=True, text=True, timeout=60)


def test_cli_renders_and_refuses_options_in_one_line():
    rendered = kaudit("policy", "render", "--profile", "EKS")
    assert rendered.returncode == 0 and load_policy(rendered.stdout).ok
    refused = kaudit("policy", "render", "--profile", "EKS", "--omit-read-only")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("error: --omit-read-only: profile EKS is the policy Amazon EKS applies")
    assert len(refused.stderr.splitlines()) == 1
