"""What kaudit must change on AWS, from what it observed: pure functions, no AWS call.

Three stages, each a function of what was observed (:class:`Observed`): ``plan_audit_log``,
``plan_forwarding`` and ``plan_flowing`` return the actions to take and the condition that holds
once they are taken. :mod:`kaudit.platforms.eks.reconcile` observes, executes and reports, and
keeps :class:`Memory` in the collection's status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kaudit.platforms.eks.aws import Cluster, SubscriptionFilter, Update, group_arn
from kaudit.platforms.eks.spec import EksSpec, Firehose, Forwarder, describe_destination, filter_name, statement_id

# Condition types of an EKS collection, in the order status lists them (Ready first, as for every
# collection). Ready needs the first two: what kaudit makes true. LogsFlowing is an observation
# (a cluster with no API traffic writes no audit event) and only adds a warning.
AUDIT_LOG_ENABLED, FORWARDING, LOGS_FLOWING = "AuditLogEnabled", "Forwarding", "LogsFlowing"
CONDITION_TYPES = ("Ready", AUDIT_LOG_ENABLED, FORWARDING, LOGS_FLOWING)
READY_NEEDS = (AUDIT_LOG_ENABLED, FORWARDING)

# Audit events arrive continuously on a live cluster (controllers, kubelets, probes); none for this
# long means the log is not reaching CloudWatch.
FRESH_MS = 15 * 60 * 1000
TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


@dataclass(frozen=True)
class Memory:
    """What kaudit keeps in ``status.eks`` between reconciles (kaudit.platforms.eks.reconcile writes it)."""

    enabled_audit_log: bool = False  # kaudit switched the audit log type on (so delete may switch it off)
    update_id: str = ""  # the EKS update kaudit started and waits for

    @classmethod
    def from_status(cls, status: Any) -> "Memory":
        eks = status.get("eks") if isinstance(status, dict) else None
        if not isinstance(eks, dict):
            return cls()
        return cls(enabled_audit_log=eks.get("auditLogEnabledByKaudit") is True,
                   update_id=str(eks.get("updateId") or ""))


@dataclass(frozen=True)
class Observed:
    cluster: Cluster
    filters: tuple[SubscriptionFilter, ...] | None  # None: the log group does not exist (yet)
    lambda_permitted: bool | None  # None: not a Lambda destination
    last_ingestion_ms: int | None


@dataclass(frozen=True)
class EnableAuditLog:
    pass


@dataclass(frozen=True)
class AddLambdaPermission:
    sid: str
    source_arn: str
    account: str


@dataclass(frozen=True)
class PutFilter:
    wanted: SubscriptionFilter
    replaces: bool  # kaudit's filter exists with other settings


Action = EnableAuditLog | AddLambdaPermission | PutFilter


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


def wanted_filter(spec: EksSpec, collection: str) -> SubscriptionFilter:
    role = spec.destination.role_arn if isinstance(spec.destination, Firehose) else ""
    return SubscriptionFilter(name=filter_name(collection), pattern=spec.filter_pattern,
                              destination_arn=spec.destination.arn, role_arn=role)


def source_arn(spec: EksSpec, cluster: Cluster) -> str:
    return group_arn(cluster.partition, spec.region, cluster.account, spec.log_group)


def plan_audit_log(spec: EksSpec, cluster: Cluster, update: Update | None) -> tuple[tuple[Action, ...], Condition]:
    name = spec.cluster_name
    if cluster.audit_enabled:
        return (), Condition(AUDIT_LOG_ENABLED, TRUE, "Enabled",
                        f"EKS cluster {name} writes its audit log to CloudWatch Logs group {spec.log_group}.")
    if update is not None and update.status == "InProgress":
        return (), Condition(AUDIT_LOG_ENABLED, FALSE, "Enabling",
                        f"EKS is switching on the audit log of cluster {name} (update {update.id}).")
    if cluster.status not in ("ACTIVE", ""):
        return (), Condition(AUDIT_LOG_ENABLED, FALSE, "ClusterNotActive",
                        f"EKS cluster {name} is {cluster.status}; kaudit switches its audit log on "
                        "once it is ACTIVE.")
    failed = f" (the last update, {update.id}, ended {update.status}: {'; '.join(update.errors) or 'no detail'})" \
        if update is not None and update.status in ("Failed", "Cancelled") else ""
    return (EnableAuditLog(),), Condition(AUDIT_LOG_ENABLED, FALSE, "Enabling",
                                     f"kaudit asked EKS to switch on the audit log of cluster {name}{failed}.")


def plan_forwarding(spec: EksSpec, collection: str, observed: Observed) -> tuple[tuple[Action, ...], Condition]:
    actions: list[Action] = []
    where = describe_destination(spec.destination)
    if isinstance(spec.destination, Forwarder) and observed.lambda_permitted is False:
        if not spec.add_lambda_permission:
            return (), Condition(FORWARDING, FALSE, "LambdaPermissionMissing",
                            f"{where} does not let CloudWatch Logs (logs.amazonaws.com) invoke it for "
                            f"{spec.log_group}, and spec.eks.addLambdaPermission is false: add the permission "
                            "('kaudit render' prints the command).")
        actions.append(AddLambdaPermission(statement_id(collection), source_arn(spec, observed.cluster),
                                           observed.cluster.account))
    filters = observed.filters
    if filters is None:
        return tuple(actions), Condition(FORWARDING, FALSE, "LogGroupPending",
                                    f"CloudWatch Logs group {spec.log_group} does not exist yet: EKS creates it "
                                    "when it first writes a control-plane log; kaudit subscribes it then.")
    wanted = wanted_filter(spec, collection)
    ours = next((f for f in filters if f.name == wanted.name), None)
    if ours is None:
        others = [f for f in filters if f.name != wanted.name]
        if len(others) >= MAX_FILTERS:
            named = ", ".join(f"{f.name} (to {f.destination_arn})" for f in others)
            return (), Condition(FORWARDING, FALSE, "FilterLimitReached",
                                        f"CloudWatch Logs allows {MAX_FILTERS} subscription filters per log group "
                                        f"and {spec.log_group} has {named}; kaudit touches no filter it did not "
                                        "create: remove one, or send one of them to Datadog.")
    if ours != wanted:
        actions.append(PutFilter(wanted, replaces=ours is not None))
    return tuple(actions), Condition(FORWARDING, TRUE, "InPlace",
                                f"Subscription filter {wanted.name} sends the audit events of {spec.log_group} "
                                f"(pattern {wanted.pattern}) to {where}.")


MAX_FILTERS = 2  # subscription filters per log group (facts 21)


def plan_flowing(spec: EksSpec, observed: Observed, now_ms: int) -> tuple[Condition, tuple[str, ...]]:
    last = observed.last_ingestion_ms
    if last is None and not observed.cluster.audit_enabled:
        return Condition(LOGS_FLOWING, UNKNOWN, "NoAuditLog", "No audit log is written to CloudWatch Logs yet."), ()
    if last is None:
        message = f"No kube-apiserver-audit stream in {spec.log_group} yet."
        return Condition(LOGS_FLOWING, FALSE, "NoAuditEvents", message), (message,)
    # No timestamp in the messages: a status that changed with every event would be written on every
    # resync of an idle operator.
    window = FRESH_MS // 60000
    if now_ms - last > FRESH_MS:
        message = (f"No audit event has reached {spec.log_group} for more than {window} minutes: is the "
                   "cluster's audit log still on?")
        return Condition(LOGS_FLOWING, FALSE, "AuditEventsStale", message), (message,)
    return Condition(LOGS_FLOWING, TRUE, "AuditEventsArriving",
                f"Audit events reach {spec.log_group} (the newest within the last {window} minutes)."), ()


# Reasons of a stage that is on its way without anyone acting (EKS applying an update, creating the
# log group): kaudit looks again after POLL_SECONDS rather than at the next resync.
PROGRESSING_REASONS = frozenset({"Enabling", "ClusterNotActive", "UpdateInProgress", "LogGroupPending"})
POLL_SECONDS = 15.0


def retry_delay(attempt: int) -> float:
    """Seconds before retrying after a retryable AWS error (throttling, an update in progress), the
    ``attempt``-th in a row (0-based): exponential, from 15 s to the resync interval's 5 minutes."""
    return float(min(300, 15 * 2 ** max(0, attempt)))
