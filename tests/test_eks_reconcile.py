"""kaudit.platforms.eks against moto's server: the AWS side of an EKS collection, end to end.

The state each test checks is read back from moto with a separate client, not from kaudit's
own report.
"""

from __future__ import annotations

import json
import time

import pytest

from aws_support import (ACCOUNT, CLUSTER, GROUP, REGION, Faults, Requests, make_cluster, make_world, session,
                         write_audit_event)
from aws_support import aws, moto_server  # noqa: F401 (fixtures)
from kaudit.platforms.eks.aws import Boto3Cloud
from kaudit.platforms.eks.plan import Memory
from kaudit.platforms.eks.reconcile import reconcile, release
from kaudit.platforms.eks.spec import parse_eks

COLLECTION = "cluster"


def now_ms() -> int:
    return int(time.time() * 1000)


def forwarder_spec(world, **extra):
    return parse_eks({"clusterName": CLUSTER, "region": REGION, "forwarderArn": world.forwarder_arn, **extra})


def run(cloud, spec, memory=Memory(), attempt=0):
    return reconcile(cloud, spec, COLLECTION, memory, now_ms=now_ms(), attempt=attempt)


def conditions(result) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in result.conditions}


def audit_on(aws) -> bool:
    logging = aws.client("eks").describe_cluster(name=CLUSTER)["cluster"]["logging"]["clusterLogging"]
    return any(e["enabled"] and "audit" in e["types"] for e in logging)


def filters(aws) -> list[dict]:
    return aws.client("logs").describe_subscription_filters(logGroupName=GROUP)["subscriptionFilters"]


def policy_statements(aws, arn) -> list[dict]:
    try:
        return json.loads(aws.client("lambda").get_policy(FunctionName=arn)["Policy"])["Statement"]
    except aws.client("lambda").exceptions.ResourceNotFoundException:
        return []


def test_create_switches_the_audit_log_on_subscribes_the_forwarder_and_is_ready(aws):
    world = make_world(aws)
    spec = forwarder_spec(world)
    result = run(Boto3Cloud(REGION), spec)
    assert audit_on(aws)
    [applied] = filters(aws)
    assert (applied["filterName"], applied["filterPattern"], applied["destinationArn"]) == \
        ("kaudit-cluster", '{ $.kind = "Event" }', world.forwarder_arn)
    [statement] = policy_statements(aws, world.forwarder_arn)
    assert statement["Sid"] == "kaudit-cluster"
    assert statement["Principal"] == {"Service": "logs.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{GROUP}:*"
    # as on AWS, kaudit waits for the asynchronous update: the next look comes soon, not at the resync
    assert conditions(result) == {"Ready": ("False", "Enabling"), "AuditLogEnabled": ("False", "Enabling"),
                                  "Forwarding": ("True", "InPlace"), "LogsFlowing": ("Unknown", "NoAuditLog")}
    assert result.retry_after == 15.0
    assert result.memory.enabled_audit_log
    assert {c.reason for c in result.changes} == {"AuditLogEnabling", "LambdaPermissionAdded",
                                                  "SubscriptionFilterApplied"}
    # the next reconcile reads the update's outcome back and is Ready without writing anything
    again = run(Boto3Cloud(REGION), spec, result.memory)
    assert conditions(again)["Ready"] == ("True", "Reconciled")
    assert conditions(again)["AuditLogEnabled"] == ("True", "Enabled")
    assert again.changes == ()


def test_converged_reconcile_reads_each_thing_once_and_writes_nothing(aws):
    world = make_world(aws)
    spec = forwarder_spec(world)
    counted = session(None)
    requests = Requests(counted)
    cloud = Boto3Cloud(REGION, counted)
    memory = run(cloud, spec).memory
    first = requests.take()
    assert first["eks:UpdateClusterConfig"] == 1 and first["logs:PutSubscriptionFilter"] == 1
    write_audit_event(aws)
    result = run(cloud, spec, memory)
    assert conditions(result)["LogsFlowing"] == ("True", "AuditEventsArriving")
    converged = requests.take()
    assert converged == {"eks:DescribeCluster": 1, "logs:DescribeSubscriptionFilters": 1, "lambda:GetPolicy": 1,
                         "logs:DescribeLogStreams": 1}


def test_drift_is_repaired_filter_deleted_and_audit_log_switched_off(aws):
    world = make_world(aws)
    spec = forwarder_spec(world)
    cloud = Boto3Cloud(REGION)
    memory = run(cloud, spec).memory
    aws.client("logs").delete_subscription_filter(logGroupName=GROUP, filterName="kaudit-cluster")
    aws.client("eks").update_cluster_config(name=CLUSTER, logging={"clusterLogging": [{"types": ["audit"],
                                                                                        "enabled": False}]})
    aws.client("lambda").remove_permission(FunctionName=world.forwarder_arn, StatementId="kaudit-cluster")
    assert not audit_on(aws) and filters(aws) == []
    repaired = run(cloud, spec, memory)
    assert audit_on(aws) and [f["filterName"] for f in filters(aws)] == ["kaudit-cluster"]
    assert [s["Sid"] for s in policy_statements(aws, world.forwarder_arn)] == ["kaudit-cluster"]
    assert {c.reason for c in repaired.changes} == {"AuditLogEnabling", "LambdaPermissionAdded",
                                                    "SubscriptionFilterApplied"}


def test_a_filter_with_other_settings_is_put_back_and_others_filters_are_left(aws):
    world = make_world(aws)
    spec = forwarder_spec(world)
    cloud = Boto3Cloud(REGION)
    memory = run(cloud, spec).memory
    logs = aws.client("logs")
    logs.put_subscription_filter(logGroupName=GROUP, filterName="kaudit-cluster", filterPattern="",
                                 destinationArn=world.forwarder_arn)
    run(cloud, spec, memory)
    assert [(f["filterName"], f["filterPattern"]) for f in filters(aws)] == [("kaudit-cluster", '{ $.kind = "Event" }')]


def test_an_existing_forwarder_permission_is_used_not_duplicated(aws):
    world = make_world(aws, forwarder_permission=True)
    result = run(Boto3Cloud(REGION), forwarder_spec(world))
    assert [s["Sid"] for s in policy_statements(aws, world.forwarder_arn)] == ["CloudWatchLogsPermission"]
    assert "LambdaPermissionAdded" not in {c.reason for c in result.changes}


def test_two_filters_of_others_are_named_and_left_alone(aws):
    world = make_world(aws)
    logs = aws.client("logs")
    for name in ("splunk", "archive"):
        logs.put_subscription_filter(logGroupName=GROUP, filterName=name, filterPattern="",
                                     destinationArn=world.forwarder_arn)
    result = run(Boto3Cloud(REGION), forwarder_spec(world))
    assert conditions(result)["Forwarding"] == ("False", "FilterLimitReached")
    assert conditions(result)["Ready"] == ("False", "FilterLimitReached")
    message = next(c.message for c in result.conditions if c.type == "Forwarding")
    assert "splunk" in message and "archive" in message
    assert sorted(f["filterName"] for f in filters(aws)) == ["archive", "splunk"]
    assert audit_on(aws)  # the audit log is still switched on: the other stage goes on


def test_the_log_group_is_awaited_not_created(aws):
    world = make_world(aws, log_group=False)
    result = run(Boto3Cloud(REGION), forwarder_spec(world))
    assert conditions(result)["Forwarding"] == ("False", "LogGroupPending")
    assert aws.client("logs").describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"] == []
    aws.client("logs").create_log_group(logGroupName=GROUP)  # EKS writes its first log
    later = run(Boto3Cloud(REGION), forwarder_spec(world), result.memory)
    assert conditions(later)["Forwarding"] == ("True", "InPlace")


def test_firehose_destination_with_its_role(aws):
    world = make_world(aws)
    spec = parse_eks({"clusterName": CLUSTER, "region": REGION, "firehoseArn": world.firehose_arn,
                      "roleArn": world.firehose_role_arn})
    memory = run(Boto3Cloud(REGION), spec).memory
    [applied] = filters(aws)
    assert (applied["destinationArn"], applied["roleArn"]) == (world.firehose_arn, world.firehose_role_arn)
    assert conditions(run(Boto3Cloud(REGION), spec, memory))["Ready"] == ("True", "Reconciled")
    assert policy_statements(aws, world.forwarder_arn) == []  # no Lambda permission for a stream


def test_a_missing_cluster_is_a_status_reason(aws):
    world = make_world(aws)
    spec = parse_eks({"clusterName": "nope", "region": REGION, "forwarderArn": world.forwarder_arn})
    result = run(Boto3Cloud(REGION), spec)
    assert conditions(result) == {"Ready": ("False", "ClusterNotFound"), "AuditLogEnabled": ("False", "ClusterNotFound"),
                                  "Forwarding": ("Unknown", "ClusterNotFound"),
                                  "LogsFlowing": ("Unknown", "ClusterNotFound")}
    assert result.retry_after is None


def test_a_missing_forwarder_is_a_status_reason(aws):
    world = make_world(aws)
    missing = world.forwarder_arn.replace("datadog-forwarder", "gone")
    result = run(Boto3Cloud(REGION), forwarder_spec(world, forwarderArn=missing))
    assert conditions(result)["Forwarding"] == ("False", "DestinationNotFound")
    assert filters(aws) == []


def test_access_denied_names_the_missing_action(aws):
    world = make_world(aws)
    faulty = session(None)
    Faults(faulty).add("logs.PutSubscriptionFilter", "AccessDeniedException",
                       "User: arn:aws:sts::123456789012:assumed-role/kaudit/x is not authorized to perform: "
                       "logs:PutSubscriptionFilter")
    result = run(Boto3Cloud(REGION, faulty), forwarder_spec(world))
    assert conditions(result)["Forwarding"] == ("False", "AccessDenied")
    assert conditions(result)["Ready"] == ("False", "AccessDenied")
    message = next(c.message for c in result.conditions if c.type == "Forwarding")
    assert message.startswith("kaudit's AWS identity may not call logs:PutSubscriptionFilter")
    assert result.retry_after == 15.0  # the audit log's update is polled; AccessDenied itself waits for a person
    assert audit_on(aws)


def test_throttling_is_retried_by_the_sdk_then_reported_with_backoff(aws):
    world = make_world(aws)
    faulty = session(None)
    faults = Faults(faulty)
    faults.add("eks.DescribeCluster", "ThrottlingException", "Rate exceeded")
    result = run(Boto3Cloud(REGION, faulty), forwarder_spec(world), attempt=2)
    assert faults.sent["eks.DescribeCluster"] == 3  # the SDK's attempts, with its own backoff between them
    assert conditions(result)["Ready"] == ("False", "Throttled")
    assert result.retry_after == 60.0  # kaudit's backoff: the third throttled reconcile in a row
    faults.planned.clear()
    assert conditions(run(Boto3Cloud(REGION, faulty), forwarder_spec(world)))["AuditLogEnabled"] == ("False", "Enabling")


def test_delete_removes_what_kaudit_created_and_switches_off_only_what_it_switched_on(aws):
    world = make_world(aws)
    spec = forwarder_spec(world, disableAuditLogOnDelete=True)
    cloud = Boto3Cloud(REGION)
    logs = aws.client("logs")
    logs.put_subscription_filter(logGroupName=GROUP, filterName="splunk", filterPattern="",
                                 destinationArn=world.forwarder_arn)
    memory = run(cloud, spec).memory
    changes = release(cloud, spec, COLLECTION, memory)
    assert [f["filterName"] for f in filters(aws)] == ["splunk"]
    assert policy_statements(aws, world.forwarder_arn) == []
    assert not audit_on(aws)
    assert [c.reason for c in changes] == ["SubscriptionFilterDeleted", "LambdaPermissionRemoved", "AuditLogDisabling"]
    assert release(cloud, spec, COLLECTION, memory)[:2] == ()  # idempotent


def test_delete_keeps_an_audit_log_the_user_had_switched_on(aws):
    world = make_world(aws)
    aws.client("eks").update_cluster_config(name=CLUSTER, logging={"clusterLogging": [{"types": ["audit"],
                                                                                        "enabled": True}]})
    spec = forwarder_spec(world, disableAuditLogOnDelete=True)
    cloud = Boto3Cloud(REGION)
    memory = run(cloud, spec).memory
    assert not memory.enabled_audit_log
    release(cloud, spec, COLLECTION, memory)
    assert audit_on(aws) and filters(aws) == []


# --- a spec.eks that moves: what kaudit made for the old set-up is removed, once the new one forwards

OTHER = "staging"
OTHER_GROUP = f"/aws/eks/{OTHER}/cluster"


def other_cluster(aws, *, log_group: bool = True) -> None:
    make_cluster(aws, OTHER, log_group=log_group)


def filter_names(aws, group: str) -> list[str]:
    return [f["filterName"] for f in aws.client("logs").describe_subscription_filters(logGroupName=group)
            ["subscriptionFilters"]]


def audit_on_cluster(aws, name: str) -> bool:
    logging = aws.client("eks").describe_cluster(name=name)["cluster"]["logging"]["clusterLogging"]
    return any(e["enabled"] and "audit" in e["types"] for e in logging)


def moved(result, spec) -> Memory:
    """The memory the operator reads back from the status ``result`` wrote, for the new ``spec``."""
    return Memory.from_status({"eks": result.status}, spec)


def test_moving_to_another_cluster_removes_the_old_filter_and_the_audit_log_kaudit_switched_on(aws):
    world = make_world(aws)
    other_cluster(aws)
    cloud = Boto3Cloud(REGION)
    first = forwarder_spec(world, disableAuditLogOnDelete=True)
    before = run(cloud, first)
    before = run(cloud, first, before.memory)  # the update is done: Ready
    assert conditions(before)["Ready"] == ("True", "Reconciled") and before.memory.enabled_audit_log
    second = forwarder_spec(world, clusterName=OTHER, disableAuditLogOnDelete=True)
    memory = moved(before, second)
    # What kaudit remembered of prod (it switched the audit log on) is prod's, not staging's.
    assert memory.previous and not memory.enabled_audit_log and memory.update_id == ""
    after = run(cloud, second, memory)
    assert filter_names(aws, GROUP) == [] and filter_names(aws, OTHER_GROUP) == ["kaudit-cluster"]
    assert not audit_on_cluster(aws, CLUSTER) and audit_on_cluster(aws, OTHER)
    # The one Forwarder serves both: kaudit's statement stays, now for staging's group.
    [statement] = policy_statements(aws, world.forwarder_arn)
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == \
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{OTHER_GROUP}:*"
    assert {"SubscriptionFilterDeleted", "AuditLogDisabling"} <= {c.reason for c in after.changes}
    assert "LambdaPermissionRemoved" not in {c.reason for c in after.changes}
    assert "previous" not in after.status and after.status["logGroup"] == OTHER_GROUP
    assert after.memory.previous == () and after.memory.enabled_audit_log


def test_moving_without_disable_on_delete_leaves_the_old_clusters_audit_log_on(aws):
    world = make_world(aws)
    other_cluster(aws)
    cloud = Boto3Cloud(REGION)
    before = run(cloud, forwarder_spec(world))
    second = forwarder_spec(world, clusterName=OTHER)
    run(cloud, second, moved(before, second))
    assert filter_names(aws, GROUP) == [] and audit_on_cluster(aws, CLUSTER)


def test_moving_to_a_firehose_removes_the_forwarders_statement_and_keeps_the_clusters_audit_log(aws):
    world = make_world(aws)
    cloud = Boto3Cloud(REGION)
    first = forwarder_spec(world, disableAuditLogOnDelete=True)
    before = run(cloud, first)
    second = parse_eks({"clusterName": CLUSTER, "region": REGION, "firehoseArn": world.firehose_arn,
                        "roleArn": world.firehose_role_arn, "disableAuditLogOnDelete": True})
    after = run(cloud, second, moved(before, second))
    [applied] = filters(aws)
    assert applied["destinationArn"] == world.firehose_arn
    assert policy_statements(aws, world.forwarder_arn) == []
    assert audit_on(aws)  # the same cluster: its audit log is the new set-up's too
    assert {c.reason for c in after.changes} == {"SubscriptionFilterApplied", "LambdaPermissionRemoved"}


def test_the_old_set_up_is_kept_in_status_until_the_new_one_forwards_then_removed(aws):
    world = make_world(aws)
    other_cluster(aws, log_group=False)  # EKS has not made staging's log group yet
    cloud = Boto3Cloud(REGION)
    before = run(cloud, forwarder_spec(world))
    second = forwarder_spec(world, clusterName=OTHER)
    waiting = run(cloud, second, moved(before, second))
    assert conditions(waiting)["Forwarding"] == ("False", "LogGroupPending")
    assert filter_names(aws, GROUP) == ["kaudit-cluster"]  # prod still ships meanwhile
    assert waiting.status["previous"] == [{"region": REGION, "clusterName": CLUSTER,
                                           "destination": world.forwarder_arn, "auditLogEnabledByKaudit": True}]
    # Read back from that status, the old set-up is still owed its removal.
    memory = moved(waiting, second)
    assert [p.cluster_name for p in memory.previous] == [CLUSTER]
    aws.client("logs").create_log_group(logGroupName=OTHER_GROUP)
    done = run(cloud, second, memory)
    assert filter_names(aws, GROUP) == [] and filter_names(aws, OTHER_GROUP) == ["kaudit-cluster"]
    assert "previous" not in done.status


def test_delete_while_an_old_set_up_is_owed_removes_both(aws):
    world = make_world(aws)
    other_cluster(aws, log_group=False)
    cloud = Boto3Cloud(REGION)
    before = run(cloud, forwarder_spec(world))
    second = forwarder_spec(world, clusterName=OTHER)
    waiting = run(cloud, second, moved(before, second))
    aws.client("logs").create_log_group(logGroupName=OTHER_GROUP)
    aws.client("logs").put_subscription_filter(logGroupName=OTHER_GROUP, filterName="kaudit-cluster",
                                               filterPattern="", destinationArn=world.forwarder_arn)
    changes = release(cloud, second, COLLECTION, moved(waiting, second))
    assert filter_names(aws, GROUP) == [] and filter_names(aws, OTHER_GROUP) == []
    assert [c.reason for c in changes].count("SubscriptionFilterDeleted") == 2


def test_a_status_from_before_the_region_was_recorded_is_the_same_set_up():
    spec = parse_eks({"clusterName": CLUSTER, "region": REGION,
                      "forwarderArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:datadog-forwarder"})
    status = {"eks": {"cluster": f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/{CLUSTER}", "logGroup": GROUP,
                      "subscriptionFilter": "kaudit-cluster", "destination": spec.destination.arn,
                      "auditLogEnabledByKaudit": True, "updateId": "u-1"}}
    assert Memory.from_status(status, spec) == Memory(enabled_audit_log=True, update_id="u-1")
    # Another region's set-up, recorded with its region: owed a removal there.
    elsewhere = {"eks": {**status["eks"], "region": "eu-west-1"}}
    memory = Memory.from_status(elsewhere, spec)
    assert [(p.region, p.cluster_name) for p in memory.previous] == [("eu-west-1", CLUSTER)]
    assert memory == Memory(previous=memory.previous)
