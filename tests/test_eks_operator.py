"""The operator's Reconciler on an EKS collection: Kubernetes in memory, AWS in moto's server.

What AWS holds is read back from moto with a client of the test's own; what Kubernetes holds
(status, Events) from the in-memory storage. GKE and AKS collections report their steps.
"""

from __future__ import annotations

import pytest

from aws_support import CLUSTER, GROUP, REGION, Faults, Requests, make_cluster, make_world, session
from aws_support import aws, moto_server  # noqa: F401 (fixtures)
from kaudit.platforms.eks.aws import Boto3Cloud
from kaudit.reconcile.platform import Clouds
from kaudit.reconcile.service import OperatorConfig, Reconciler
from test_reconciler import MemoryStorage, conditions, live

KEY = ("auditcollections", None, "cluster")


def eks_collection(world, platform: str = "EKS", **eks) -> dict:
    spec: dict = {"platform": platform}
    if platform == "EKS":
        spec["eks"] = {"clusterName": CLUSTER, "region": REGION, "forwarderArn": world.forwarder_arn,
                       "disableAuditLogOnDelete": True, **eks}
    return {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection",
            "metadata": {"name": "cluster", "uid": "uid-cluster", "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec}


def reconciler(storage, sess=None) -> Reconciler:
    clouds = Clouds(lambda region: Boto3Cloud(region, sess)) if sess is not None else Clouds()
    return Reconciler(storage, OperatorConfig(namespace="ops"), clouds=clouds, clock=lambda: "2026-01-01T00:00:00Z")


def reasons(storage) -> dict[str, tuple[str, str]]:
    return {t: (c["status"], c["reason"]) for t, c in conditions(storage).items()}


def audit_on(aws) -> bool:
    logging = aws.client("eks").describe_cluster(name=CLUSTER)["cluster"]["logging"]["clusterLogging"]
    return any(e["enabled"] and "audit" in e["types"] for e in logging)


def filter_names(aws) -> list[str]:
    return [f["filterName"] for f in aws.client("logs").describe_subscription_filters(logGroupName=GROUP)
            ["subscriptionFilters"]]


async def test_create_is_ready_drift_is_repaired_delete_cleans_up(aws):
    world = make_world(aws)
    storage = MemoryStorage(eks_collection(world))
    operator = reconciler(storage)
    first = await operator.reconcile(live(storage))
    assert audit_on(aws) and filter_names(aws) == ["kaudit-cluster"]
    assert first.requeue_after == 15.0 and reasons(storage)["Ready"] == ("False", "Enabling")
    assert [w for w, _ in storage.writes] == ["patch status"]  # nothing else written to Kubernetes
    assert {e["reason"] for e in storage.events} >= {"AuditLogEnabling", "LambdaPermissionAdded",
                                                    "SubscriptionFilterApplied"}
    second = await operator.reconcile(live(storage))
    assert second.ready and reasons(storage)["AuditLogEnabled"] == ("True", "Enabled")
    status = storage.objects[KEY]["status"]
    assert status["eks"]["auditLogEnabledByKaudit"] is True and status["eks"]["logGroup"] == GROUP
    assert "policy" not in status and "apiServerFlags" not in status  # nothing node-side on EKS

    writes = len(storage.writes)
    assert (await operator.reconcile(live(storage))).writes == 0 and len(storage.writes) == writes  # idle: no write

    aws.client("logs").delete_subscription_filter(logGroupName=GROUP, filterName="kaudit-cluster")
    aws.client("eks").update_cluster_config(name=CLUSTER, logging={"clusterLogging": [{"types": ["audit"],
                                                                                        "enabled": False}]})
    await operator.reconcile(live(storage))
    assert audit_on(aws) and filter_names(aws) == ["kaudit-cluster"]

    released = await operator.release(live(storage))
    assert released == 3 and filter_names(aws) == [] and not audit_on(aws)


async def test_a_spec_moved_to_another_cluster_leaves_nothing_of_kaudits_on_the_old_one(aws):
    world = make_world(aws)
    make_cluster(aws, "staging")
    storage = MemoryStorage(eks_collection(world))
    operator = reconciler(storage)
    await operator.reconcile(live(storage))
    assert (await operator.reconcile(live(storage))).ready and audit_on(aws)
    moved = eks_collection(world, clusterName="staging")
    storage.objects[KEY]["spec"] = moved["spec"]
    storage.objects[KEY]["metadata"]["generation"] = 2
    await operator.reconcile(live(storage))
    staging = aws.client("logs").describe_subscription_filters(logGroupName="/aws/eks/staging/cluster")
    assert filter_names(aws) == [] and not audit_on(aws)
    assert [f["filterName"] for f in staging["subscriptionFilters"]] == ["kaudit-cluster"]
    assert {e["reason"] for e in storage.events} >= {"SubscriptionFilterDeleted", "AuditLogDisabling"}
    status = storage.objects[KEY]["status"]["eks"]
    assert status["logGroup"] == "/aws/eks/staging/cluster" and "previous" not in status


async def test_converged_resync_sends_one_describe_cluster_and_three_other_reads(aws):
    world = make_world(aws)
    counted = session(None)
    requests = Requests(counted)
    storage = MemoryStorage(eks_collection(world))
    operator = reconciler(storage, counted)
    await operator.reconcile(live(storage))
    await operator.reconcile(live(storage))
    requests.take()
    for _ in range(3):  # three resyncs
        await operator.reconcile(live(storage))
    assert requests.take() == {"eks:DescribeCluster": 3, "logs:DescribeSubscriptionFilters": 3,
                               "lambda:GetPolicy": 3, "logs:DescribeLogStreams": 3}


async def test_access_denied_and_throttling_are_status_reasons_not_crashes(aws):
    world = make_world(aws)
    faulty = session(None)
    faults = Faults(faulty)
    faults.add("eks.DescribeCluster", "AccessDeniedException",
               "User: arn:aws:sts::123456789012:assumed-role/kaudit/x is not authorized to perform: eks:DescribeCluster")
    storage = MemoryStorage(eks_collection(world))
    operator = reconciler(storage, faulty)
    outcome = await operator.reconcile(live(storage))
    assert reasons(storage)["Ready"] == ("False", "AccessDenied") and outcome.requeue_after is None
    assert "eks:DescribeCluster" in conditions(storage)["Ready"]["message"]
    assert [e["type"] for e in storage.events if e["reason"] == "AccessDenied"] == ["Warning"]

    faults.add("eks.DescribeCluster", "ThrottlingException", "Rate exceeded")
    delays = [(await operator.reconcile(live(storage))).requeue_after for _ in range(2)]
    assert reasons(storage)["Ready"] == ("False", "Throttled")
    assert delays == [15.0, 30.0]  # backing off, reconcile after reconcile
    faults.planned.clear()
    await operator.reconcile(live(storage))
    assert reasons(storage)["AuditLogEnabled"] == ("False", "Enabling")


async def test_an_eks_collection_asking_for_node_side_things_is_refused_with_the_reason(aws):
    world = make_world(aws)
    body = eks_collection(world)
    body["spec"]["agent"] = {"mode": "DaemonSet"}
    storage = MemoryStorage(body)
    await reconciler(storage).reconcile(live(storage))
    assert reasons(storage)["Ready"] == ("False", "InvalidSpec")
    assert "spec.agent: Forbidden: on platform EKS" in conditions(storage)["AgentConfigured"]["message"]
    assert not audit_on(aws)  # nothing done on AWS either


@pytest.mark.parametrize("platform, category", [("GKE", "container.googleapis.com"), ("AKS", "kube-audit-admin")])
async def test_gke_and_aks_report_their_steps(platform, category):
    storage = MemoryStorage(eks_collection(None, platform))
    outcome = await reconciler(storage).reconcile(live(storage))
    assert outcome.ready and reasons(storage)["Ready"] == ("True", "ManualSetup")
    assert reasons(storage)["AuditLogConfigured"] == ("Unknown", "ManualSetup")
    assert any(category in step for step in storage.objects[KEY]["status"]["nextSteps"])
    assert [w for w, _ in storage.writes] == ["patch status"]


# --- spec.detection on a managed control plane ------------------------------------------------------

async def test_an_eks_collections_required_rules_are_assessed_under_the_policy_eks_applies(aws):
    # EKS's policy (the GCE reference policy, docs/eks.md) drops nothing about pods/exec, while kaudit's
    # Default profile leaves it partly blind; it drops events and /healthz at level None, which
    # system:anonymous requests too: the anonymous rule is partly blind there.
    world = make_world(aws)
    body = eks_collection(world)
    body["spec"]["detection"] = {"packRules": ["kaudit-pod-exec"]}
    storage = MemoryStorage(body)
    operator = reconciler(storage)
    await operator.reconcile(live(storage))
    await operator.reconcile(live(storage))
    assert reasons(storage)["Ready"] == ("True", "Reconciled")
    assert reasons(storage)["DetectionCoverage"] == ("True", "RulesCovered")
    assert conditions(storage)["DetectionCoverage"]["message"] == "all 1 required rule(s) fire under EKS's own policy"

    storage.objects[KEY]["spec"]["detection"] = {"packRules": ["kaudit-pod-exec", "kaudit-anonymous-allowed"]}
    storage.objects[KEY]["metadata"]["generation"] = 2
    await operator.reconcile(live(storage))
    assert reasons(storage)["DetectionCoverage"] == ("True", "RulesPartlyBlind")
    message = conditions(storage)["DetectionCoverage"]["message"]
    assert message.startswith("1 of 2 required rule(s) partly blind under EKS's own policy: kaudit: anonymous")
    assert reasons(storage)["Ready"] == ("True", "Reconciled")  # coverage informs, it does not decide Ready


async def test_refuse_mode_on_eks_is_a_spec_error_naming_the_field(aws):
    world = make_world(aws)
    body = eks_collection(world)
    body["spec"]["detection"] = {"mode": "Refuse", "packRules": ["kaudit-pod-exec"]}
    storage = MemoryStorage(body)
    await reconciler(storage).reconcile(live(storage))
    assert reasons(storage)["Ready"] == ("False", "InvalidSpec")
    message = next(c["message"] for c in conditions(storage).values() if c["reason"] == "InvalidSpec"
                   and "spec.detection" in c["message"])
    assert "spec.detection.mode: Forbidden: on platform EKS" in message and "use Report" in message
    assert not audit_on(aws)


@pytest.mark.parametrize("platform", ["GKE", "AKS"])
async def test_required_rules_on_a_platform_whose_policy_kaudit_does_not_know_are_a_warning(platform):
    body = eks_collection(None, platform)
    body["spec"]["detection"] = {"packRules": ["kaudit-pod-exec"]}
    storage = MemoryStorage(body)
    outcome = await reconciler(storage).reconcile(live(storage))
    status = storage.objects[KEY]["status"]
    assert outcome.ready and "DetectionCoverage" not in reasons(storage)
    assert [w for w in status["warnings"] if w.startswith("spec.detection:")] == [
        f"spec.detection: kaudit does not know the audit policy {platform} applies, so it cannot tell which "
        "required rules fire; replay them on logs it recorded with 'kaudit policy simulate --detections'"]
