"""``spec.eks``: which EKS cluster, and where CloudWatch Logs sends its audit events.

:func:`parse_eks` is the only way in; it reports every problem at once as FieldErrors naming
``spec.eks....`` paths, unknown fields included, like the rest of the spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kaudit.errors import FieldError, InvalidInput, did_you_mean

# Only the audit events: EKS writes the other control-plane logs into the same group as plain text,
# and every audit message is one audit.k8s.io/v1 Event (facts 21).
DEFAULT_FILTER_PATTERN = '{ $.kind = "Event" }'
MAX_FILTER_PATTERN = 1024  # CloudWatch Logs' limit on a subscription filter pattern

_PARTITION = r"aws(-cn|-us-gov|-iso(-[a-z])?)?"
_REGION = r"[a-z]{2}(-[a-z]+)+-[0-9]+"
_ACCOUNT = r"[0-9]{12}"
_PATTERNS = {
    # EKS cluster names: 1-100 characters, a letter or digit first, then letters, digits, - and _
    "clusterName": (re.compile(r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$"),
                    "must be an EKS cluster name (1-100 letters, digits, '-' and '_', starting with a letter or digit)"),
    "region": (re.compile(rf"^{_REGION}$"), "must be an AWS region such as us-east-1"),
    "forwarderArn": (re.compile(rf"^arn:{_PARTITION}:lambda:(?P<region>{_REGION}):{_ACCOUNT}:function:[A-Za-z0-9_-]{{1,64}}"
                                r"(:[A-Za-z0-9_$-]{1,128})?$"),
                     "must be the ARN of a Lambda function (arn:aws:lambda:REGION:ACCOUNT:function:NAME)"),
    "firehoseArn": (re.compile(rf"^arn:{_PARTITION}:firehose:(?P<region>{_REGION}):{_ACCOUNT}:deliverystream/"
                               r"[A-Za-z0-9_.-]{1,64}$"),
                    "must be the ARN of a Firehose stream (arn:aws:firehose:REGION:ACCOUNT:deliverystream/NAME)"),
    "roleArn": (re.compile(rf"^arn:{_PARTITION}:iam::{_ACCOUNT}:role/[A-Za-z0-9+=,.@_/-]{{1,512}}$"),
                "must be the ARN of an IAM role (arn:aws:iam::ACCOUNT:role/NAME)"),
}
FIELDS = ("clusterName", "region", "forwarderArn", "firehoseArn", "roleArn", "filterPattern",
          "addLambdaPermission", "disableAuditLogOnDelete")


@dataclass(frozen=True)
class Forwarder:
    """The Datadog Forwarder Lambda: CloudWatch Logs invokes it, so it needs a resource policy entry."""

    arn: str


@dataclass(frozen=True)
class Firehose:
    """An Amazon Data Firehose stream with the Datadog destination; CloudWatch Logs writes to it as ``role_arn``."""

    arn: str
    role_arn: str


Destination = Forwarder | Firehose


@dataclass(frozen=True)
class EksSpec:
    cluster_name: str
    region: str
    destination: Destination
    filter_pattern: str = DEFAULT_FILTER_PATTERN
    # Add the Lambda permission for logs.amazonaws.com when the Forwarder lacks it (the Forwarder's
    # own templates usually add one; kaudit adds its own only where none covers the log group).
    add_lambda_permission: bool = True
    # On delete, switch the cluster's audit log type off again, only if kaudit switched it on.
    disable_audit_log_on_delete: bool = False

    @property
    def log_group(self) -> str:
        return log_group_name(self.cluster_name)


def log_group_name(cluster: str) -> str:
    """The group EKS writes the control-plane logs of ``cluster`` to (facts 21)."""
    return f"/aws/eks/{cluster}/cluster"


def filter_name(collection: str) -> str:
    """The subscription filter kaudit owns for ``collection``: named after it, so kaudit never touches another."""
    return f"kaudit-{collection}"


def statement_id(collection: str) -> str:
    """The Lambda permission statement kaudit adds for ``collection`` (and the only one it removes)."""
    return f"kaudit-{collection}"


def parse_eks(value: Any, path: str = "spec.eks") -> EksSpec:
    """``spec.eks`` as an EksSpec; raise InvalidInput naming every problem under ``path``."""
    if not isinstance(value, dict):
        got = "nothing" if value is None else type(value).__name__
        raise InvalidInput([FieldError(path, f"Required value: an object with clusterName, region and a "
                                             f"destination (forwarderArn, or firehoseArn and roleArn), got {got}")])
    errors = [FieldError(f"{path}.{key}", f'unknown field "{key}"{did_you_mean(str(key), FIELDS)}')
              for key in sorted(set(value) - set(FIELDS), key=str)]
    strings = {key: _string(value, key, path, errors) for key in (*_PATTERNS, "filterPattern")}
    flags = {key: _flag(value, key, path, errors) for key in ("addLambdaPermission", "disableAuditLogOnDelete")}
    for key in ("clusterName", "region"):
        if strings[key] is None and not any(e.path == f"{path}.{key}" for e in errors):
            errors.append(FieldError(f"{path}.{key}", "Required value"))
    destination = _destination(strings, path, errors)
    pattern = strings["filterPattern"]
    if pattern is not None and not (0 < len(pattern) <= MAX_FILTER_PATTERN):
        errors.append(FieldError(f"{path}.filterPattern", f"Invalid value: must be 1 to {MAX_FILTER_PATTERN} characters"))
    if errors or destination is None:
        raise InvalidInput(errors)
    return EksSpec(
        cluster_name=str(strings["clusterName"]), region=str(strings["region"]), destination=destination,
        filter_pattern=pattern or DEFAULT_FILTER_PATTERN,
        add_lambda_permission=flags["addLambdaPermission"] if flags["addLambdaPermission"] is not None else True,
        disable_audit_log_on_delete=bool(flags["disableAuditLogOnDelete"]),
    )


def _string(obj: dict[str, Any], key: str, path: str, errors: list[FieldError]) -> str | None:
    raw = obj.get(key)
    if raw is None:
        return None
    if not isinstance(raw, str):
        errors.append(FieldError(f"{path}.{key}", f"Invalid value: expected a string, got {type(raw).__name__}"))
        return None
    pattern, why = _PATTERNS.get(key, (None, ""))
    if pattern is not None and not pattern.match(raw):
        errors.append(FieldError(f"{path}.{key}", f'Invalid value: "{raw}": {why}'))
        return None
    return raw


def _flag(obj: dict[str, Any], key: str, path: str, errors: list[FieldError]) -> bool | None:
    raw = obj.get(key)
    if raw is None or isinstance(raw, bool):
        return raw
    errors.append(FieldError(f"{path}.{key}", f"Invalid value: {raw!r}: expected true or false"))
    return None


def _destination(strings: dict[str, str | None], path: str, errors: list[FieldError]) -> Destination | None:
    forwarder, firehose, role = strings["forwarderArn"], strings["firehoseArn"], strings["roleArn"]
    region = strings["region"]
    named = [key for key in ("forwarderArn", "firehoseArn") if strings[key] is not None]
    if len(named) != 1:
        if not any(e.path in (f"{path}.forwarderArn", f"{path}.firehoseArn") for e in errors):
            errors.append(FieldError(path, "Required value: exactly one destination: forwarderArn (the Datadog "
                                           "Forwarder Lambda) or firehoseArn with roleArn"
                                     + (", not both" if len(named) == 2 else "")))
        return None
    if firehose is not None and role is None:
        errors.append(FieldError(f"{path}.roleArn", "Required value: the role CloudWatch Logs assumes to write to "
                                                    "the Firehose stream"))
        return None
    if forwarder is not None and role is not None:
        errors.append(FieldError(f"{path}.roleArn", "Forbidden: a Lambda destination takes no role (CloudWatch Logs "
                                                    "invokes it under the function's resource policy)"))
        return None
    arn = forwarder or firehose
    key = named[0]
    match = _PATTERNS[key][0].match(str(arn))
    if region is not None and match is not None and match.group("region") != region:
        errors.append(FieldError(f"{path}.{key}", f'Invalid value: "{arn}": must be in the cluster\'s region {region} '
                                                  "(a subscription filter delivers within its region)"))
        return None
    return Forwarder(str(forwarder)) if forwarder is not None else Firehose(str(firehose), str(role))


def describe_destination(destination: Destination) -> str:
    if isinstance(destination, Forwarder):
        return f"the Datadog Forwarder {destination.arn}"
    return f"the Firehose stream {destination.arn}"

