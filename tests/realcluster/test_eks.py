"""An EKS collection on the real control plane, with moto's server as AWS.

The operator runs as a real ``kaudit run`` process under the chart's ServiceAccount and RBAC, its
SDK pointed at moto through the environment (AWS_ENDPOINT_URL, static credentials where IRSA
would give a web identity): create -> the audit log type on, the filter in place, Ready, and not
one Kubernetes object written besides the collection's status and Events; drift on AWS repaired
at the resync; delete -> the finalizer removes what kaudit made on AWS, then the collection goes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: aws_support
from aws_support import CLUSTER, GROUP, REGION, MotoServer, make_cluster, make_world, session  # noqa: E402
from kaudit_harness import KauditInstall, install  # noqa: E402
from plane import wait_for  # noqa: E402

RELEASE, NAMESPACE, AGENT_NAMESPACE = "kaudit-eks", "kaudit-eks", "datadog-eks"
NAME = "eks"
RESYNC = 2.0


@pytest.fixture(scope="module")
def moto():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator(control_plane, moto):
    env = install(control_plane, RELEASE, NAMESPACE, AGENT_NAMESPACE)
    kubeconfig = control_plane.kubeconfig_for_service_account(NAMESPACE, env.service_account)
    aws_env = {**moto.env(), "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    env.operators.append(control_plane.start_operator("--standalone", "--resync-seconds", str(RESYNC),
                                                      kubeconfig=kubeconfig, namespace=NAMESPACE, env=aws_env,
                                                      name="operator-eks"))
    yield env
    env.cleanup()


def audit_on(aws) -> bool:
    logging = aws.client("eks").describe_cluster(name=CLUSTER)["cluster"]["logging"]["clusterLogging"]
    return any(e["enabled"] and "audit" in e["types"] for e in logging)


def filter_names(aws, group: str = GROUP) -> list[str]:
    return [f["filterName"] for f in aws.client("logs").describe_subscription_filters(logGroupName=group)
            ["subscriptionFilters"]]


def condition(plane, type_: str) -> tuple[str, str] | None:
    body = plane.get_or_none("auditcollection", NAME) or {}
    found = {c["type"]: (c["status"], c["reason"]) for c in (body.get("status") or {}).get("conditions") or []}
    return found.get(type_)


def test_eks_collection_end_to_end(control_plane, operator: KauditInstall, moto, monkeypatch):
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    aws = session(moto)
    world = make_world(aws)
    operator.create({"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": NAME},
                     "spec": {"platform": "EKS", "eks": {"clusterName": CLUSTER, "region": REGION,
                                                         "forwarderArn": world.forwarder_arn,
                                                         "disableAuditLogOnDelete": True}}})
    status = operator.wait_ready(NAME, timeout=60)
    assert audit_on(aws) and filter_names(aws) == [f"kaudit-{NAME}"]
    assert status["eks"]["subscriptionFilter"] == f"kaudit-{NAME}" and status["eks"]["auditLogEnabledByKaudit"]
    body = control_plane.get_or_none("auditcollection", NAME)
    assert body["metadata"]["finalizers"]  # kaudit's: AWS objects have no owner references
    assert operator.children(NAME) == {}  # nothing node-side on EKS
    # the CRD's defaults (spec.policy, spec.agent) ask for nothing there: accepted, not refused
    assert body["spec"]["agent"]["mode"] == "Managed" and condition(control_plane, "Forwarding") == ("True", "InPlace")

    aws.client("logs").delete_subscription_filter(logGroupName=GROUP, filterName=f"kaudit-{NAME}")
    aws.client("eks").update_cluster_config(name=CLUSTER, logging={"clusterLogging": [{"types": ["audit"],
                                                                                        "enabled": False}]})
    wait_for(lambda: audit_on(aws) and filter_names(aws) == [f"kaudit-{NAME}"], 30,
             "the resync to repair the filter and the audit log type")

    # Moved to another cluster whose log group EKS has not made yet: the old set-up keeps shipping and
    # is remembered in status.eks.previous (the CRD's schema keeps it: the real apiserver prunes
    # unknown fields), then removed once the new filter is in place.
    make_cluster(aws, "staging", log_group=False)
    control_plane.kubectl("patch", "auditcollection", NAME, "--type", "merge", "-p",
                          '{"spec": {"eks": {"clusterName": "staging"}}}')
    wait_for(lambda: ((control_plane.get_or_none("auditcollection", NAME) or {}).get("status") or {})
             .get("eks", {}).get("previous"), 30, "status.eks.previous to name the old set-up")
    previous = control_plane.get_or_none("auditcollection", NAME)["status"]["eks"]["previous"]
    assert [(p["clusterName"], p["auditLogEnabledByKaudit"]) for p in previous] == [(CLUSTER, True)]
    assert filter_names(aws) == [f"kaudit-{NAME}"]
    aws.client("logs").create_log_group(logGroupName="/aws/eks/staging/cluster")
    wait_for(lambda: filter_names(aws) == [] and filter_names(aws, "/aws/eks/staging/cluster") == [f"kaudit-{NAME}"],
             30, "the old filter removed once the new one forwards")
    assert not audit_on(aws)  # kaudit had switched it on, and disableAuditLogOnDelete asks
    wait_for(lambda: "previous" not in control_plane.get_or_none("auditcollection", NAME)["status"]["eks"], 30,
             "status.eks.previous to go")

    operator.delete_collection(NAME)
    assert control_plane.get_or_none("auditcollection", NAME) is None
    assert filter_names(aws, "/aws/eks/staging/cluster") == [] and not audit_on(aws)
