"""Observe, act, report: one EKS collection against an :class:`~kaudit.platforms.eks.aws.EksCloud`.

Three stages run in turn (the cluster's audit log type; the subscription filter and the Lambda
permission; whether audit events arrive), each observing then acting on what
:mod:`kaudit.platforms.eks.plan` decides. An AWS error stops its own stage and is that stage's
condition; the other stages still run. Converged, a reconcile reads DescribeCluster,
DescribeSubscriptionFilters, GetPolicy (Forwarder only) and DescribeLogStreams once each and
writes nothing. Synchronous (boto3): the operator runs it in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from kaudit.conditions import FALSE, TRUE, UNKNOWN, Condition
from kaudit.platforms.eks.aws import AwsError, Cluster, EksCloud, Update, permits_logs
from kaudit.platforms.eks.plan import (AUDIT_LOG_ENABLED, FORWARDING, LOGS_FLOWING, POLL_SECONDS, PROGRESSING_REASONS,
                                       READY_NEEDS, AddLambdaPermission, Memory, Observed, PutFilter, Setup,
                                       plan_audit_log, plan_flowing, plan_forwarding, retry_delay, source_arn)
from kaudit.platforms.eks.spec import EksSpec, Forwarder, describe_destination, filter_name, statement_id

READY_REASON = "Reconciled"


@dataclass(frozen=True)
class Change:
    """Something kaudit changed on AWS: a Normal Event."""

    reason: str
    message: str


@dataclass(frozen=True)
class Result:
    conditions: tuple[Condition, ...]  # Ready first
    memory: Memory
    status: dict[str, Any]  # status.eks
    changes: tuple[Change, ...] = ()
    warnings: tuple[str, ...] = ()
    # seconds until kaudit should look again: a retryable AWS error (with backoff), or a stage on its way
    retry_after: float | None = None

    @property
    def ready(self) -> bool:
        return self.conditions[0].status == TRUE


class _Run:
    """One reconcile's bookkeeping: conditions as the stages settle them, changes, the retry."""

    def __init__(self, memory: Memory, attempt: int):
        self.memory = memory
        self.attempt = attempt
        self.conditions: dict[str, Condition] = {}
        self.changes: list[Change] = []
        self.warnings: list[str] = []
        self.retryable = False

    def failed(self, type_: str, exc: AwsError, message: str = "") -> None:
        self.conditions[type_] = Condition(type_, FALSE, exc.reason, message or exc.message)
        self.retryable = self.retryable or exc.retryable

    def blocked(self, types: tuple[str, ...], why: Condition) -> None:
        for type_ in types:
            self.conditions.setdefault(type_, Condition(type_, UNKNOWN, why.reason, why.message))


def reconcile(cloud: EksCloud, spec: EksSpec, collection: str, memory: Memory, *, now_ms: int,
              attempt: int = 0, cloud_for: Callable[[str], EksCloud] | None = None) -> Result:
    """Make the audit log of ``spec``'s cluster reach its destination; say how things stand.

    ``memory.previous`` (set-ups of earlier specs: another cluster, region or destination) are
    removed once the new one forwards, so no audit event goes unshipped in between; ``cloud_for``
    gives the client of another region than ``spec``'s."""
    run = _Run(memory, attempt)
    cluster = _audit_log(cloud, spec, run)
    if cluster is None:
        run.blocked((FORWARDING, LOGS_FLOWING), run.conditions[AUDIT_LOG_ENABLED])
    else:
        group_exists = _forwarding(cloud, spec, collection, cluster, run)
        _flowing(cloud, spec, cluster, group_exists, run, now_ms)
        if run.memory.previous and run.conditions[FORWARDING].status == TRUE:
            _retire_previous(cloud, cloud_for, spec, collection, run)
    return _result(spec, collection, cluster, run)


def _retire_previous(cloud: EksCloud, cloud_for: Callable[[str], EksCloud] | None, spec: EksSpec, collection: str,
                     run: _Run) -> None:
    left = []
    for setup in run.memory.previous:
        try:
            run.changes += retire(_cloud_in(setup.region, spec, cloud, cloud_for), setup, collection, spec,
                                  disable_audit_log=spec.disable_audit_log_on_delete)
        except AwsError as exc:
            left.append(setup)
            run.retryable = run.retryable or exc.retryable
            run.warnings.append(f"kaudit has yet to remove what it set up for EKS cluster {setup.cluster_name} in "
                                f"{setup.region} before spec.eks changed: {exc.message}")
    run.memory = replace(run.memory, previous=tuple(left))


def _cloud_in(region: str, spec: EksSpec, cloud: EksCloud, cloud_for: Callable[[str], EksCloud] | None) -> EksCloud:
    """The client for ``region``: ``cloud`` (spec.eks's region) there, else ``cloud_for``'s."""
    return cloud if region == spec.region or cloud_for is None else cloud_for(region)


def retire(cloud: EksCloud, setup: Setup, collection: str, now: EksSpec | None, *,
           disable_audit_log: bool) -> tuple[Change, ...]:
    """Remove what kaudit made for ``collection`` in ``setup`` and the set-up ``now`` in place
    (None: none, the collection is deleted) does not use: its subscription filter, its Lambda
    statement, and, when kaudit switched it on and ``disable_audit_log``, the cluster's audit log
    type. Idempotent: what is already gone is skipped. AwsError propagates (the caller retries)."""
    current = Setup.of(now) if now is not None else None
    changes = []
    name = filter_name(collection)
    if (current is None or (setup.region, setup.log_group) != (current.region, current.log_group)) \
            and cloud.delete_subscription_filter(setup.log_group, name):
        changes.append(Change("SubscriptionFilterDeleted", f"kaudit deleted subscription filter {name} on "
                                                           f"{setup.log_group}."))
    sid = statement_id(collection)
    # A Forwarder both set-ups use keeps kaudit's statement: reconcile points it at the new group.
    if ":lambda:" in setup.destination and (current is None or current.destination != setup.destination) \
            and cloud.remove_lambda_permission(setup.destination, sid):
        changes.append(Change("LambdaPermissionRemoved", f"kaudit removed statement {sid} from {setup.destination}."))
    if disable_audit_log and setup.enabled_audit_log and (current is None or not setup.same_cluster(current)):
        try:
            cluster = cloud.describe_cluster(setup.cluster_name)
        except AwsError as exc:
            if exc.code != "ResourceNotFoundException":
                raise
        else:
            if cluster.audit_enabled:
                cloud.set_audit_logging(setup.cluster_name, False)
                changes.append(Change("AuditLogDisabling", f"kaudit asked EKS to switch off the audit log of "
                                                           f"cluster {setup.cluster_name}, which it had switched on."))
    return tuple(changes)


def _audit_log(cloud: EksCloud, spec: EksSpec, run: _Run) -> Cluster | None:
    try:
        cluster = cloud.describe_cluster(spec.cluster_name)
    except AwsError as exc:
        if exc.code == "ResourceNotFoundException":
            exc = replace_reason(exc, "ClusterNotFound", f"There is no EKS cluster {spec.cluster_name} in "
                                                         f"{spec.region} (eks:DescribeCluster: {exc.code}).")
        run.failed(AUDIT_LOG_ENABLED, exc)
        return None
    update: Update | None = None
    try:
        if not cluster.audit_enabled and run.memory.update_id:
            update = cloud.describe_update(spec.cluster_name, run.memory.update_id)
        actions, condition = plan_audit_log(spec, cluster, update)
        run.conditions[AUDIT_LOG_ENABLED] = condition
        for _ in actions:  # EnableAuditLog
            update_id = cloud.set_audit_logging(spec.cluster_name, True)
            run.memory = replace(run.memory, enabled_audit_log=True, update_id=update_id or "")
            run.changes.append(Change("AuditLogEnabling", f"kaudit asked EKS to switch on the audit log of cluster "
                                                          f"{spec.cluster_name}" + (f" (update {update_id})." if update_id else ".")))
    except AwsError as exc:
        run.failed(AUDIT_LOG_ENABLED, exc)
    if cluster.audit_enabled and run.memory.update_id:
        run.memory = replace(run.memory, update_id="")  # the update is done
    return cluster


def _forwarding(cloud: EksCloud, spec: EksSpec, collection: str, cluster: Cluster, run: _Run) -> bool | None:
    """The subscription filter and the Lambda permission; returns whether the log group exists (None: unknown)."""
    try:
        filters = cloud.subscription_filters(spec.log_group)
        permitted: bool | None = None
        own = False
        if isinstance(spec.destination, Forwarder):
            statements = cloud.lambda_policy(spec.destination.arn)
            permitted = permits_logs(statements, source_arn(spec, cluster), cluster.account)
            own = any(s.get("Sid") == statement_id(collection) for s in statements)
        observed = Observed(cluster=cluster, filters=filters, lambda_permitted=permitted,
                            last_ingestion_ms=None, own_statement=own)
        actions, condition = plan_forwarding(spec, collection, observed)
        run.conditions[FORWARDING] = condition
        for action in actions:
            if isinstance(action, AddLambdaPermission):
                _add_permission(cloud, spec, action)
                run.changes.append(Change("LambdaPermissionAdded", f"kaudit let CloudWatch Logs invoke "
                                                                   f"{spec.destination.arn} for {spec.log_group} "
                                                                   f"(statement {action.sid})."))
            elif isinstance(action, PutFilter):
                _put_filter(cloud, spec, action)
                verb = "updated" if action.replaces else "created"
                run.changes.append(Change("SubscriptionFilterApplied", f"kaudit {verb} subscription filter "
                                                                       f"{action.wanted.name} on {spec.log_group} to "
                                                                       f"{describe_destination(spec.destination)}."))
        return filters is not None
    except AwsError as exc:
        run.failed(FORWARDING, exc)
        return None


def _add_permission(cloud: EksCloud, spec: EksSpec, action: AddLambdaPermission) -> None:
    assert isinstance(spec.destination, Forwarder)
    arn = spec.destination.arn
    if action.replaces:
        cloud.remove_lambda_permission(arn, action.sid)
    try:
        cloud.add_lambda_permission(arn, action.sid, action.source_arn, action.account)
    except AwsError as exc:
        if exc.code == "ResourceConflictException":  # kaudit's statement was added meanwhile, for another log group
            cloud.remove_lambda_permission(arn, action.sid)
            cloud.add_lambda_permission(arn, action.sid, action.source_arn, action.account)
        elif exc.code == "ResourceNotFoundException":
            raise replace_reason(exc, "DestinationNotFound", f"There is no Lambda function {arn} "
                                                             f"(lambda:AddPermission: {exc.code}).") from exc
        else:
            raise


def _put_filter(cloud: EksCloud, spec: EksSpec, action: PutFilter) -> None:
    try:
        cloud.put_subscription_filter(spec.log_group, action.wanted)
    except AwsError as exc:
        if exc.code == "InvalidParameterException":  # CloudWatch Logs could not reach the destination
            raise replace_reason(exc, "DestinationRefused", f"CloudWatch Logs refused "
                                                            f"{describe_destination(spec.destination)} as the "
                                                            f"destination of {spec.log_group}: {exc.message}") from exc
        if exc.code == "LimitExceededException":
            raise replace_reason(exc, "FilterLimitReached", f"{spec.log_group} already has the 2 subscription "
                                                            f"filters CloudWatch Logs allows: {exc.message}") from exc
        if exc.code == "ResourceNotFoundException":
            raise replace_reason(exc, "LogGroupPending", f"CloudWatch Logs group {spec.log_group} does not "
                                                         "exist (yet).", retryable=True) from exc
        raise


def _flowing(cloud: EksCloud, spec: EksSpec, cluster: Cluster, group_exists: bool | None, run: _Run,
             now_ms: int) -> None:
    try:
        last = cloud.last_audit_ingestion(spec.log_group) if group_exists is not False else None
    except AwsError as exc:
        run.failed(LOGS_FLOWING, exc)
        return
    observed = Observed(cluster=cluster, filters=None, lambda_permitted=None, last_ingestion_ms=last)
    condition, warnings = plan_flowing(spec, observed, now_ms)
    run.conditions[LOGS_FLOWING] = condition
    run.warnings += warnings


def _result(spec: EksSpec, collection: str, cluster: Cluster | None, run: _Run) -> Result:
    conditions = tuple(run.conditions[t] for t in (AUDIT_LOG_ENABLED, FORWARDING, LOGS_FLOWING))
    ready = ready_condition(spec, conditions)
    status: dict[str, Any] = {"cluster": cluster.arn if cluster else "", "region": spec.region,
                              "logGroup": spec.log_group, "subscriptionFilter": filter_name(collection),
                              "destination": spec.destination.arn,
                              "auditLogEnabledByKaudit": run.memory.enabled_audit_log}
    if run.memory.update_id:
        status["updateId"] = run.memory.update_id
    if run.memory.previous:
        status["previous"] = [setup.as_status() for setup in run.memory.previous]
    retry_after = retry_delay(run.attempt) if run.retryable else None
    if retry_after is None and any(c.reason in PROGRESSING_REASONS for c in conditions):
        retry_after = POLL_SECONDS
    return Result(conditions=(ready, *conditions), memory=run.memory, status=status, changes=tuple(run.changes),
                  warnings=tuple(run.warnings), retry_after=retry_after)


def ready_condition(spec: EksSpec, conditions: tuple[Condition, ...]) -> Condition:
    """Ready: True when what kaudit makes true is; otherwise the first condition that needs a person,
    or else the first one still on its way."""
    pending = [c for c in conditions if c.type in READY_NEEDS and c.status != TRUE]
    for condition in sorted(pending, key=lambda c: c.reason in PROGRESSING_REASONS):
        return Condition("Ready", FALSE, condition.reason, condition.message)
    return Condition("Ready", TRUE, READY_REASON, f"The audit log of EKS cluster {spec.cluster_name} goes to "
                                             f"{describe_destination(spec.destination)}.")


def replace_reason(exc: AwsError, reason: str, message: str, *, retryable: bool | None = None) -> AwsError:
    return AwsError(reason, message, action=exc.action, code=exc.code,
                    retryable=exc.retryable if retryable is None else retryable)


def release(cloud: EksCloud, spec: EksSpec, collection: str, memory: Memory,
            cloud_for: Callable[[str], EksCloud] | None = None) -> tuple[Change, ...]:
    """Remove what kaudit created for ``collection``, in its set-up and in any earlier one it has
    yet to remove (:func:`retire`); the audit log type only where kaudit switched it on and
    spec.eks.disableAuditLogOnDelete asks. AwsError propagates (the caller retries)."""
    changes: list[Change] = []
    for setup in (Setup.of(spec, memory.enabled_audit_log), *memory.previous):
        changes += retire(_cloud_in(setup.region, spec, cloud, cloud_for), setup, collection, None,
                          disable_audit_log=spec.disable_audit_log_on_delete)
    return tuple(changes)
