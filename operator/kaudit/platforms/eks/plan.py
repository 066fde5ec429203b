"""What kaudit must change on AWS, from what it observed: pure functions, no AWS call.

Three stages, each a function of what was observed (:class:`Observed`): ``plan_audit_log``,
``plan_forwarding`` and ``plan_flowing`` return the actions to take and the condition that holds
once they are taken. :mod:`kaudit.platforms.eks.reconcile` observes, executes and reports, and
keeps :class:`Memory` in the collection's status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kaudit.conditions import FALSE, TRUE, UNKNOWN, Condition
from kaudit.platforms.eks.aws import Cluster, SubscriptionFilter, Update, group_arn
from kaudit.platforms.eks.spec import (EksSpec, Firehose, Forwarder, describe_destination, filter_name, log_group_name,
                                      statement_id)

# Condition types of an EKS collection, in the order status lists them (Ready first, as for every
# collection). Ready needs the first two: what kaudit makes true. LogsFlowing is an observation
# (a cluster with no API traffic writes no audit event) and only adds a warning.
AUDIT_LOG_ENABLED, FORWARDING, LOGS_FLOWING = "AuditLogEnabled", "Forwarding", "LogsFlowing"
CONDITION_TYPES = ("Ready", AUDIT_LOG_ENABLED, FORWARDING, LOGS_FLOWING)
READY_NEEDS = (AUDIT_LOG_ENABLED, FORWARDING)

# Audit events arrive continuously on a live cluster (controllers, kubelets, probes); none for this
# long means the log is not reaching CloudWatch.
FRESH_MS = 15 * 60 * 1000


@dataclass(frozen=True)
class Setup:
    """Where kaudit forwards a collection's audit log: the cluster (its audit log type), its log
    group (kaudit's subscription filter there) and the destination (kaudit's Lambda statement, for
    a Forwarder). status.eks records the current one; a spec that moves to another cluster,
    region or destination leaves the old one listed in status.eks.previous until kaudit has
    removed what it made there (kaudit.platforms.eks.reconcile.retire)."""

    region: str
    cluster_name: str
    destination: str  # the destination's ARN
    enabled_audit_log: bool = False  # kaudit switched this cluster's audit log type on

    @property
    def log_group(self) -> str:
        return log_group_name(self.cluster_name)

    def same_cluster(self, other: "Setup") -> bool:
        return (self.region, self.cluster_name) == (other.region, other.cluster_name)

    def as_status(self) -> dict[str, Any]:
        return {"region": self.region, "clusterName": self.cluster_name, "destination": self.destination,
                "auditLogEnabledByKaudit": self.enabled_audit_log}

    @classmethod
    def of(cls, spec: EksSpec, enabled_audit_log: bool = False) -> "Setup":
        return cls(spec.region, spec.cluster_name, spec.destination.arn, enabled_audit_log)


@dataclass(frozen=True)
class Memory:
    """What kaudit keeps in ``status.eks`` between reconciles (kaudit.platforms.eks.reconcile writes it)."""

    enabled_audit_log: bool = False  # kaudit switched the audit log type on (so delete may switch it off)
    update_id: str = ""  # the EKS update kaudit started and waits for
    previous: tuple[Setup, ...] = ()  # set-ups of earlier specs with something of kaudit's left to remove

    @classmethod
    def from_status(cls, status: Any, spec: EksSpec | None = None) -> "Memory":
        """The memory status.eks holds, for ``spec`` when given: a set-up recorded for another
        cluster, region or destination than ``spec``'s becomes one of ``previous``, and what was
        remembered of another cluster (its audit log switched on, an update) is not this one's."""
        eks = status.get("eks") if isinstance(status, dict) else None
        if not isinstance(eks, dict):
            return cls()
        memory = cls(enabled_audit_log=eks.get("auditLogEnabledByKaudit") is True,
                     update_id=str(eks.get("updateId") or ""),
                     previous=tuple(p for p in map(_setup_from_status, eks.get("previous") or []) if p is not None))
        recorded = _recorded_setup(eks, spec)
        if spec is None or recorded is None or recorded == Setup.of(spec, recorded.enabled_audit_log):
            return memory
        kept = recorded.same_cluster(Setup.of(spec))
        return cls(enabled_audit_log=memory.enabled_audit_log and kept, update_id=memory.update_id if kept else "",
                   previous=(*memory.previous, recorded))


def _setup_from_status(value: Any) -> Setup | None:
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str) and value.get(k)
                                              for k in ("region", "clusterName", "destination")):
        return None
    return Setup(value["region"], value["clusterName"], value["destination"],
                 value.get("auditLogEnabledByKaudit") is True)


_LOG_GROUP = re.compile(r"^/aws/eks/(?P<cluster>[^/]+)/cluster$")


def _recorded_setup(eks: dict[str, Any], spec: EksSpec | None) -> Setup | None:
    """The set-up status.eks's own fields describe (None when they describe none). A status
    written before it recorded the region is taken to be in ``spec``'s."""
    match = _LOG_GROUP.match(str(eks.get("logGroup") or ""))
    destination = eks.get("destination")
    region = eks.get("region") or (spec.region if spec is not None else "")
    if match is None or not isinstance(destination, str) or not destination or not isinstance(region, str):
        return None
    return Setup(region, match["cluster"], destination, eks.get("auditLogEnabledByKaudit") is True)


@dataclass(frozen=True)
class Observed:
    cluster: Cluster
    filters: tuple[SubscriptionFilter, ...] | None  # None: the log group does not exist (yet)
    lambda_permitted: bool | None  # None: not a Lambda destination
    last_ingestion_ms: int | None
    # kaudit's statement is in the Lambda's policy (for another log group when not permitted):
    # AddPermission refuses a statement id that exists, so it is replaced
    own_statement: bool = False


@dataclass(frozen=True)
class EnableAuditLog:
    pass


@dataclass(frozen=True)
class AddLambdaPermission:
    sid: str
    source_arn: str
    account: str
    replaces: bool = False  # kaudit's statement exists (for another log group): removed first


@dataclass(frozen=True)
class PutFilter:
    wanted: SubscriptionFilter
    replaces: bool  # kaudit's filter exists with other settings


Action = EnableAuditLog | AddLambdaPermission | PutFilter


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
                                           observed.cluster.account, replaces=observed.own_statement))
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
