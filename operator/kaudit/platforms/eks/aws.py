"""The AWS side of EKS audit logging: the calls kaudit makes, and the one place where botocore's
errors become kaudit's (:class:`AwsError`).

:class:`EksCloud` is the storage protocol the reconciler depends on; :class:`Boto3Cloud` is the
real one. Credentials, region endpoints and retries come from the SDK's default chain (IRSA's
web-identity token, EKS Pod Identity, environment, shared config; ``AWS_ENDPOINT_URL`` points
every client elsewhere), so nothing here knows where it runs. boto3 rather than aiobotocore:
docs/eks.md#the-aws-sdk has the measurement; the calls are few and run in a worker thread.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol

from kaudit.errors import KauditError

AUDIT = "audit"  # the EKS control-plane log type of the audit log
AUDIT_STREAM_PREFIX = "kube-apiserver-audit"  # the streams of the audit log in the cluster's group
LOGS_PRINCIPAL = "logs.amazonaws.com"
INVOKE = "lambda:InvokeFunction"

# The SDK retries throttling and transient errors itself, with exponential backoff and jitter
# ("standard" mode); what still fails after that is reported and retried on a later reconcile.
SDK_RETRY_ATTEMPTS = 3  # attempts in all, the first included
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0

_THROTTLING = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
                         "ThrottledException", "SlowDown", "RequestThrottled", "RequestThrottledException"})
_DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "UnrecognizedClientException",
                     "InvalidClientTokenId", "ExpiredTokenException", "ExpiredToken", "NotAuthorized"})


class AwsError(KauditError):
    """An AWS call that failed, as a status reason: ``reason`` is CamelCase, ``message`` a sentence
    naming the IAM action; ``retryable`` says whether the same call may pass later unchanged."""

    def __init__(self, reason: str, message: str, *, action: str, code: str = "", retryable: bool = False):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.action = action
        self.code = code
        self.retryable = retryable


@dataclass(frozen=True)
class Cluster:
    arn: str
    status: str  # ACTIVE, CREATING, UPDATING, ...
    audit_enabled: bool

    @property
    def account(self) -> str:
        return self.arn.split(":")[4]

    @property
    def partition(self) -> str:
        return self.arn.split(":")[1]


@dataclass(frozen=True)
class Update:
    id: str
    status: str  # InProgress, Failed, Cancelled, Successful
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubscriptionFilter:
    name: str
    pattern: str
    destination_arn: str
    role_arn: str = ""


class EksCloud(Protocol):
    """What the reconciler reads and writes on AWS, nothing else (the IAM policy kaudit renders lists
    exactly these calls)."""

    def describe_cluster(self, name: str) -> Cluster: ...
    def set_audit_logging(self, name: str, enabled: bool) -> str | None: ...  # the update's id, when AWS gives one
    def describe_update(self, name: str, update_id: str) -> Update: ...
    def subscription_filters(self, group: str) -> tuple[SubscriptionFilter, ...] | None: ...  # None: no group
    def put_subscription_filter(self, group: str, wanted: SubscriptionFilter) -> None: ...
    def delete_subscription_filter(self, group: str, name: str) -> bool: ...  # False: it was not there
    def lambda_policy(self, function_arn: str) -> tuple[dict[str, Any], ...]: ...  # resource policy statements
    def add_lambda_permission(self, function_arn: str, sid: str, source_arn: str, account: str) -> None: ...
    def remove_lambda_permission(self, function_arn: str, sid: str) -> bool: ...  # False: it was not there
    def last_audit_ingestion(self, group: str) -> int | None: ...  # ms since the epoch; None: no audit stream


def group_arn(partition: str, region: str, account: str, group: str) -> str:
    """The ARN CloudWatch Logs presents as the invoking source (``:*`` covers the group's streams)."""
    return f"arn:{partition}:logs:{region}:{account}:log-group:{group}:*"


def permits_logs(statements: tuple[dict[str, Any], ...], source_arn: str, account: str) -> bool:
    """Whether a statement of a Lambda resource policy lets CloudWatch Logs invoke the function
    for the log group ``source_arn`` (no source condition, or one that matches it)."""
    return any(_allows(statement, source_arn, account) for statement in statements)


def _allows(statement: dict[str, Any], source_arn: str, account: str) -> bool:
    principal = statement.get("Principal")
    services = principal.get("Service") if isinstance(principal, dict) else principal
    services = [services] if isinstance(services, str) else list(services or ())
    actions = statement.get("Action")
    actions = [actions] if isinstance(actions, str) else list(actions or ())
    if statement.get("Effect") != "Allow" or not any(s == LOGS_PRINCIPAL or s.startswith("logs.") for s in services):
        return False
    if not any(a in (INVOKE, "lambda:*", "*") for a in actions):
        return False
    conditions = statement.get("Condition") or {}
    for operator_, tests in conditions.items():
        for key, expected in (tests or {}).items():
            values = [expected] if isinstance(expected, str) else list(expected)
            if key.lower() == "aws:sourcearn" and not any(fnmatch.fnmatchcase(source_arn, v) for v in values):
                return False
            if key.lower() == "aws:sourceaccount" and account not in values:
                return False
    return True


class Boto3Cloud:
    """:class:`EksCloud` on boto3, in one region. Every call goes through :meth:`_call`."""

    def __init__(self, region: str, session: Any = None):
        import boto3  # type: ignore[import-untyped]  # boto3 ships no type information
        from botocore.config import Config  # type: ignore[import-untyped]

        from kaudit import __version__

        self._session = session or boto3.session.Session()
        self._config = Config(region_name=region, user_agent_extra=f"kaudit/{__version__}",
                              retries={"mode": "standard", "total_max_attempts": SDK_RETRY_ATTEMPTS},
                              connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT)
        self._clients: dict[str, Any] = {}
        self.region = region

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._session.client(service, config=self._config)
        return self._clients[service]

    def _call(self, service: str, operation: str, **params: Any) -> Any:
        """``operation`` (botocore's snake_case name) of ``service``; botocore errors as AwsError."""
        with translated(service, operation):
            return getattr(self._client(service), operation)(**params)

    def describe_cluster(self, name: str) -> Cluster:
        cluster = self._call("eks", "describe_cluster", name=name)["cluster"]
        return Cluster(arn=cluster["arn"], status=cluster.get("status", ""),
                       audit_enabled=audit_enabled(cluster.get("logging") or {}))

    def set_audit_logging(self, name: str, enabled: bool) -> str | None:
        # Only the audit type is named: EKS keeps the other types as they are.
        response = self._call("eks", "update_cluster_config", name=name,
                              logging={"clusterLogging": [{"types": [AUDIT], "enabled": enabled}]})
        update = response.get("update")  # an asynchronous update; some emulators answer without one
        return update["id"] if isinstance(update, dict) and update.get("id") else None

    def describe_update(self, name: str, update_id: str) -> Update:
        update = self._call("eks", "describe_update", name=name, updateId=update_id)["update"]
        errors = tuple(f"{e.get('errorCode', '')}: {e.get('errorMessage', '')}" for e in update.get("errors") or ())
        return Update(id=update_id, status=update.get("status", ""), errors=errors)

    def subscription_filters(self, group: str) -> tuple[SubscriptionFilter, ...] | None:
        try:
            response = self._call("logs", "describe_subscription_filters", logGroupName=group)
        except AwsError as exc:
            if exc.code == "ResourceNotFoundException":
                return None
            raise
        return tuple(SubscriptionFilter(name=f["filterName"], pattern=f.get("filterPattern", ""),
                                        destination_arn=f.get("destinationArn", ""), role_arn=f.get("roleArn", ""))
                     for f in response.get("subscriptionFilters", ()))

    def put_subscription_filter(self, group: str, wanted: SubscriptionFilter) -> None:
        params: dict[str, Any] = dict(logGroupName=group, filterName=wanted.name, filterPattern=wanted.pattern,
                                      destinationArn=wanted.destination_arn)
        if wanted.role_arn:
            params["roleArn"] = wanted.role_arn
        self._call("logs", "put_subscription_filter", **params)

    def delete_subscription_filter(self, group: str, name: str) -> bool:
        return self._absent_is_false(lambda: self._call("logs", "delete_subscription_filter",
                                                        logGroupName=group, filterName=name))

    def lambda_policy(self, function_arn: str) -> tuple[dict[str, Any], ...]:
        try:
            response = self._call("lambda", "get_policy", FunctionName=function_arn)
        except AwsError as exc:
            # No resource policy at all is the same 404 as no function; the function's absence shows
            # when kaudit adds its permission or the filter.
            if exc.code == "ResourceNotFoundException":
                return ()
            raise
        statements = json.loads(response.get("Policy") or "{}").get("Statement") or []
        return tuple(s for s in statements if isinstance(s, dict))

    def add_lambda_permission(self, function_arn: str, sid: str, source_arn: str, account: str) -> None:
        self._call("lambda", "add_permission", FunctionName=function_arn, StatementId=sid, Action=INVOKE,
                   Principal=LOGS_PRINCIPAL, SourceArn=source_arn, SourceAccount=account)

    def remove_lambda_permission(self, function_arn: str, sid: str) -> bool:
        return self._absent_is_false(lambda: self._call("lambda", "remove_permission",
                                                        FunctionName=function_arn, StatementId=sid))

    def last_audit_ingestion(self, group: str) -> int | None:
        # AWS refuses orderBy=LastEventTime together with a prefix, so the newest is picked here;
        # an EKS cluster has one audit stream per kube-apiserver instance, a handful.
        try:
            response = self._call("logs", "describe_log_streams", logGroupName=group,
                                  logStreamNamePrefix=AUDIT_STREAM_PREFIX)
        except AwsError as exc:
            if exc.code == "ResourceNotFoundException":
                return None
            raise
        times = [s["lastIngestionTime"] for s in response.get("logStreams", ()) if s.get("lastIngestionTime")]
        return max(times) if times else None

    @staticmethod
    def _absent_is_false(call: Callable[[], object]) -> bool:
        try:
            call()
        except AwsError as exc:
            if exc.code == "ResourceNotFoundException":
                return False
            raise
        return True


def audit_enabled(logging: dict[str, Any]) -> bool:
    """Whether DescribeCluster's ``logging`` has the audit type on (EKS groups the types by state)."""
    return any(entry.get("enabled") and AUDIT in (entry.get("types") or ())
               for entry in logging.get("clusterLogging") or ())


# --- botocore errors into kaudit's ----------------------------------------------------------------

def iam_action(service: str, operation: str) -> str:
    """The IAM action of a botocore operation: the API name under the service prefix
    (``describe_cluster`` of eks is ``eks:DescribeCluster``)."""
    return f"{service}:{''.join(part.capitalize() for part in operation.split('_'))}"


class translated:
    """``with translated(service, operation):`` turns a botocore exception into an AwsError."""

    def __init__(self, service: str, operation: str):
        self.action = iam_action(service, operation)

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None or isinstance(exc, AwsError):
            return False
        error = from_botocore(exc, self.action)
        if error is None:
            return False
        raise error from exc


def from_botocore(exc: BaseException, action: str) -> AwsError | None:
    """The AwsError for a botocore exception raised by ``action``; None for anything else."""
    from botocore import exceptions as bx  # type: ignore[import-untyped]

    if isinstance(exc, bx.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        text = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
        return _client_error(code, text, action)
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError)):
        return AwsError("NoCredentials", f"{action}: no usable AWS credentials in the operator's environment "
                                         f"({exc}); give its ServiceAccount an IAM role (IRSA annotation or an "
                                         "EKS Pod Identity association)", action=action, retryable=True)
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                        bx.ConnectionClosedError)):
        return AwsError("AwsUnreachable", f"{action}: {exc}", action=action, retryable=True)
    if isinstance(exc, bx.BotoCoreError):
        return AwsError("AwsError", f"{action}: {exc}", action=action)
    return None


def _client_error(code: str, text: str, action: str) -> AwsError:
    if code in _DENIED:
        return AwsError("AccessDenied", f"kaudit's AWS identity may not call {action}: {code}: {text}",
                        action=action, code=code)
    if code in _THROTTLING:
        return AwsError("Throttled", f"AWS throttled {action} beyond the SDK's {SDK_RETRY_ATTEMPTS} attempts: "
                                     f"{code}: {text}", action=action, code=code, retryable=True)
    if code == "ResourceInUseException":  # EKS: another update of the cluster is in progress
        return AwsError("UpdateInProgress", f"{action}: {text}", action=action, code=code, retryable=True)
    if code in ("ServiceUnavailableException", "ServiceUnavailable", "InternalFailure", "ServerException",
                "InternalServerError", "ServiceException", "OperationAbortedException"):
        return AwsError("AwsUnavailable", f"{action}: {code}: {text}", action=action, code=code, retryable=True)
    return AwsError("AwsError", f"{action}: {code}: {text}", action=action, code=code)

