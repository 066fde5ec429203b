"""``kaudit render`` for platform EKS: the end state the operator reaches, for a team that applies it
through its own pipeline instead of giving kaudit AWS rights.

Three views of one end state, all pure: the AWS CLI commands (each an argv, so a test can run
exactly what is printed), a Terraform snippet, and the minimal IAM policy of the operator (each
action with the reason kaudit calls it; :class:`kaudit.platforms.eks.aws.Boto3Cloud` makes exactly
these calls).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from kaudit.platforms.eks.aws import AUDIT, INVOKE, LOGS_PRINCIPAL, group_arn
from kaudit.platforms.eks.spec import EksSpec, Firehose, Forwarder, filter_name, statement_id


@dataclass(frozen=True)
class Command:
    why: str
    argv: tuple[str, ...]

    @property
    def text(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class Permission:
    action: str
    resource: str
    why: str


@dataclass(frozen=True)
class EksRendered:
    commands: tuple[Command, ...]
    terraform: str
    permissions: tuple[Permission, ...]

    def iam_policy(self) -> dict[str, object]:
        by_resource: dict[str, list[str]] = {}
        for permission in self.permissions:
            by_resource.setdefault(permission.resource, []).append(permission.action)
        return {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": actions, "Resource": resource} for resource, actions in by_resource.items()]}


def _arn_parts(arn: str) -> tuple[str, str]:
    """(partition, account) of an ARN."""
    parts = arn.split(":")
    return parts[1], parts[4]


def render_eks(collection: str, spec: EksSpec) -> EksRendered:
    # The account: the destination's (CloudWatch Logs subscribes a group to a Lambda or stream of its
    # own account; across accounts a Logs destination sits between, which kaudit does not make).
    partition, account = _arn_parts(spec.destination.arn)
    source = group_arn(partition, spec.region, account, spec.log_group)
    return EksRendered(commands=_commands(collection, spec, source, account),
                       terraform=_terraform(collection, spec, source, account),
                       permissions=_permissions(spec, partition, account))


def _aws(*args: str, region: str) -> tuple[str, ...]:
    return ("aws", *args, "--region", region)


def _commands(collection: str, spec: EksSpec, source: str, account: str) -> tuple[Command, ...]:
    logging = json.dumps({"clusterLogging": [{"types": [AUDIT], "enabled": True}]}, separators=(",", ":"))
    commands = [
        Command("Switch on the cluster's audit log type (only that type is named: the others stay as they are).",
                _aws("eks", "update-cluster-config", "--name", spec.cluster_name, "--logging", logging,
                     region=spec.region)),
        Command("Wait for EKS to apply the update (the cluster is UPDATING meanwhile).",
                _aws("eks", "wait", "cluster-active", "--name", spec.cluster_name, region=spec.region)),
    ]
    if isinstance(spec.destination, Forwarder):
        commands.append(Command(
            "Let CloudWatch Logs invoke the Datadog Forwarder for this log group (skip it if the Forwarder's "
            "own permission for logs.amazonaws.com already covers the group).",
            _aws("lambda", "add-permission", "--function-name", spec.destination.arn, "--statement-id",
                 statement_id(collection), "--action", INVOKE, "--principal", LOGS_PRINCIPAL, "--source-arn",
                 source, "--source-account", account, region=spec.region)))
    filter_args = ["logs", "put-subscription-filter", "--log-group-name", spec.log_group, "--filter-name",
                   filter_name(collection), "--filter-pattern", spec.filter_pattern, "--destination-arn",
                   spec.destination.arn]
    if isinstance(spec.destination, Firehose):
        filter_args += ["--role-arn", spec.destination.role_arn]
    commands.append(Command("Send the audit events of the group to the destination (EKS creates the group with "
                            "the first control-plane log; run this once it exists).",
                            _aws(*filter_args, region=spec.region)))
    return tuple(commands)


def _hcl(value: str) -> str:
    """A Terraform string literal (JSON's escapes are HCL's, plus ${ and %{ templates)."""
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def _terraform(collection: str, spec: EksSpec, source: str, account: str) -> str:
    name = filter_name(collection).replace("-", "_")
    lines = [
        "# The audit log type is an argument of the cluster's own resource: add \"audit\" there.",
        "# resource \"aws_eks_cluster\" \"...\" {",
        f"#   name                      = {_hcl(spec.cluster_name)}",
        "#   enabled_cluster_log_types = [\"audit\", ...]",
        "# }",
    ]
    depends = ""
    if isinstance(spec.destination, Forwarder):
        lines += [
            "",
            f"resource \"aws_lambda_permission\" \"{name}\" {{",
            f"  statement_id   = {_hcl(statement_id(collection))}",
            f"  action         = {_hcl(INVOKE)}",
            f"  function_name  = {_hcl(spec.destination.arn)}",
            f"  principal      = {_hcl(LOGS_PRINCIPAL)}",
            f"  source_arn     = {_hcl(source)}",
            f"  source_account = {_hcl(account)}",
            "}",
        ]
        depends = f"  depends_on      = [aws_lambda_permission.{name}]"
    lines += [
        "",
        f"resource \"aws_cloudwatch_log_subscription_filter\" \"{name}\" {{",
        f"  name            = {_hcl(filter_name(collection))}",
        f"  log_group_name  = {_hcl(spec.log_group)}",
        f"  filter_pattern  = {_hcl(spec.filter_pattern)}",
        f"  destination_arn = {_hcl(spec.destination.arn)}",
    ]
    if isinstance(spec.destination, Firehose):
        lines.append(f"  role_arn        = {_hcl(spec.destination.role_arn)}")
    if depends:
        lines.append(depends)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _permissions(spec: EksSpec, partition: str, account: str) -> tuple[Permission, ...]:
    cluster = f"arn:{partition}:eks:{spec.region}:{account}:cluster/{spec.cluster_name}"
    group = f"arn:{partition}:logs:{spec.region}:{account}:log-group:{spec.log_group}:*"
    found = [
        Permission("eks:DescribeCluster", cluster, "read whether the audit log type is on (every resync; "
                                                   "the cluster's ARN names the account)"),
        Permission("eks:UpdateClusterConfig", cluster, "switch the audit log type on (and off on delete, with "
                                                       "disableAuditLogOnDelete, when kaudit switched it on)"),
        Permission("eks:DescribeUpdate", cluster, "follow the update that switches it on"),
        Permission("logs:DescribeSubscriptionFilters", group, "find kaudit's filter and count the others "
                                                              "(two per group at most)"),
        Permission("logs:PutSubscriptionFilter", group, "create or repair kaudit's filter"),
        Permission("logs:DeleteSubscriptionFilter", group, "delete kaudit's filter when the collection goes"),
        Permission("logs:DescribeLogStreams", group, "see when audit events last arrived (LogsFlowing)"),
    ]
    destination = spec.destination
    if isinstance(destination, Forwarder):
        found.append(Permission("lambda:GetPolicy", destination.arn, "check that CloudWatch Logs may invoke the "
                                                                     "Forwarder for the group"))
        if spec.add_lambda_permission:
            found += [Permission("lambda:AddPermission", destination.arn, "add that permission when missing"),
                      Permission("lambda:RemovePermission", destination.arn, "remove kaudit's statement on delete")]
        else:
            found.append(Permission("lambda:RemovePermission", destination.arn,
                                    "remove kaudit's statement on delete, if an earlier spec added one"))
    else:
        found.append(Permission("iam:PassRole", destination.role_arn, "hand the role to CloudWatch Logs with the "
                                                                      "filter (it writes to the stream as that role)"))
    return tuple(found)


def render_text(collection: str, spec: EksSpec) -> str:
    """What ``kaudit render`` prints for an EKS collection."""
    rendered = render_eks(collection, spec)
    out = [f"# Platform EKS: cluster {spec.cluster_name} in {spec.region}. kaudit renders no Kubernetes object: the "
           "audit log is in CloudWatch Logs.",
           "# The operator (with the IAM policy below) makes this true and keeps it true; or apply it yourself:",
           "", "# --- AWS CLI ---"]
    for number, command in enumerate(rendered.commands, 1):
        out += [f"# {number}. {command.why}", command.text]
    out += ["", "# --- Terraform ---", rendered.terraform.rstrip("\n"), "",
            "# --- IAM policy of the operator's role (IRSA: chart value serviceAccount.awsRoleArn) ---"]
    out += [f"#   {p.action}: {p.why}" for p in rendered.permissions]
    out.append(json.dumps(rendered.iam_policy(), indent=2))
    return "\n".join(out) + "\n"
