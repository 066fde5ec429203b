"""``kaudit render`` on an EKS collection: the printed AWS CLI commands, run against moto, reach the
operator's end state; the IAM policy names exactly the calls the operator makes; the Terraform
snippet states the same values; GKE and AKS print their steps.

The commands run through the ``aws`` CLI (skipped where it is not on PATH) and through boto3 running
the same operations with the same arguments, read off the printed argv with botocore's service model.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aws_support import CLUSTER, GROUP, REGION, Requests, make_world, session
from aws_support import aws, moto_server  # noqa: F401 (fixtures)
from kaudit.platforms.eks.aws import Boto3Cloud, iam_action
from kaudit.platforms.eks.plan import Memory
from kaudit.platforms.eks.reconcile import reconcile, release
from kaudit.platforms.eks.spec import parse_eks

REPO = Path(__file__).resolve().parents[1]


def collection(eks: dict, platform: str = "EKS") -> dict:
    spec = {"platform": platform, **({"eks": eks} if eks else {})}
    return {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": "cluster"},
            "spec": spec}


def kaudit_render(tmp_path, body: dict, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "eks.yaml"
    path.write_text(yaml.safe_dump(body))
    return subprocess.run([sys.executable, "-m", "kaudit", "render", "-f", str(path), *args],
                          capture_output=True, text=True, timeout=60)


def end_state(aws, forwarder: str) -> dict:
    logging = aws.client("eks").describe_cluster(name=CLUSTER)["cluster"]["logging"]["clusterLogging"]
    filters = aws.client("logs").describe_subscription_filters(logGroupName=GROUP)["subscriptionFilters"]
    try:
        statements = json.loads(aws.client("lambda").get_policy(FunctionName=forwarder)["Policy"])["Statement"]
    except aws.client("lambda").exceptions.ResourceNotFoundException:
        statements = []
    return {"audit": any(e["enabled"] and "audit" in e["types"] for e in logging),
            "filters": sorted((f["filterName"], f["filterPattern"], f["destinationArn"], f.get("roleArn", ""))
                              for f in filters),
            "statements": sorted((s["Sid"], json.dumps(s["Principal"]), json.dumps(s.get("Condition"), sort_keys=True))
                                 for s in statements)}


def run_with_boto3(sess, argv: list[str]) -> None:
    """``aws SERVICE OPERATION --param value ...`` as boto3 makes it (``aws eks wait`` as its waiter)."""
    from botocore import xform_name

    assert argv[0] == "aws"
    service, operation, rest = argv[1], argv[2], argv[3:]
    waiter = rest.pop(0) if operation == "wait" else ""
    options = dict(zip(rest[::2], rest[1::2]))
    client = sess.client(service, region_name=options.pop("--region"))
    if waiter:
        client.get_waiter(waiter.replace("-", "_")).wait(
            **{key[2:]: value for key, value in options.items()}, WaiterConfig={"Delay": 1})
        return
    model = client.meta.service_model
    name = next(n for n in model.operation_names if xform_name(n, "-") == operation)
    members = model.operation_model(name).input_shape.members
    params = {}
    for flag, value in options.items():
        member = next(m for m in members if xform_name(m, "-") == flag[2:])
        params[member] = json.loads(value) if members[member].type_name in ("structure", "list") else value
    getattr(client, xform_name(name))(**params)


def execute(sess, commands: list[list[str]], moto, executor: str) -> None:
    cli = shutil.which("aws")
    if executor == "aws CLI" and cli is None:
        pytest.skip("no aws CLI on PATH (the boto3 case runs the same calls)")
    for argv in commands:
        if executor == "aws CLI":
            env = {"PATH": "/usr/bin:/bin:" + str(Path(cli).parent), "HOME": "/nonexistent", **moto.env(),
                   "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
            done = subprocess.run([cli, *argv[1:]], capture_output=True, text=True, env=env, timeout=120)
            assert done.returncode == 0, done.stderr
        else:
            run_with_boto3(sess, argv)


@pytest.mark.parametrize("destination, executor", [("forwarder", "aws CLI"), ("firehose", "aws CLI"),
                                                   ("forwarder", "boto3")])
def test_the_printed_commands_reach_the_operators_end_state(aws, moto_server, tmp_path, destination, executor):
    world = make_world(aws)
    eks = {"clusterName": CLUSTER, "region": REGION}
    eks |= {"forwarderArn": world.forwarder_arn} if destination == "forwarder" else \
        {"firehoseArn": world.firehose_arn, "roleArn": world.firehose_role_arn}
    done = kaudit_render(tmp_path, collection(eks), "-o", "json")
    assert done.returncode == 0, done.stderr
    rendered = json.loads(done.stdout)
    execute(aws, [c["argv"] for c in rendered["commands"]], moto_server, executor)
    by_commands = end_state(aws, world.forwarder_arn)

    moto_server.reset()
    world = make_world(aws)
    spec = parse_eks(eks)
    memory = Memory()
    for _ in range(2):  # the operator: create, then the look after the update
        memory = reconcile(Boto3Cloud(REGION), spec, "cluster", memory, now_ms=0).memory
    assert end_state(aws, world.forwarder_arn) == by_commands
    assert by_commands["audit"] and len(by_commands["filters"]) == 1


def test_yaml_output_prints_the_same_commands_terraform_and_iam(tmp_path):
    eks = {"clusterName": CLUSTER, "region": REGION,
           "forwarderArn": "arn:aws:lambda:us-east-1:123456789012:function:datadog-forwarder"}
    as_json = json.loads(kaudit_render(tmp_path, collection(eks), "-o", "json").stdout)
    text = kaudit_render(tmp_path, collection(eks)).stdout
    import shlex

    printed = [shlex.split(line) for line in text.splitlines() if line.startswith("aws ")]
    assert printed == [c["argv"] for c in as_json["commands"]]
    policy = json.loads(text[text.index("\n{") + 1:])
    assert policy == as_json["iamPolicy"]
    # the Terraform filter states what the CLI command sets
    terraform = as_json["terraform"]
    put = next(c["argv"] for c in as_json["commands"] if "put-subscription-filter" in c["argv"])
    values = {flag: put[put.index(flag) + 1] for flag in ("--filter-name", "--log-group-name", "--destination-arn")}
    for flag, attribute in (("--filter-name", "name"), ("--log-group-name", "log_group_name"),
                            ("--destination-arn", "destination_arn")):
        assert re.search(rf'^  {attribute} += {re.escape(json.dumps(values[flag]))}$', terraform, re.M), attribute
    assert 'filter_pattern  = "{ $.kind = \\"Event\\" }"' in terraform


def test_the_iam_policy_is_exactly_the_calls_the_operator_makes(aws, tmp_path):
    world = make_world(aws)
    eks = {"clusterName": CLUSTER, "region": REGION, "forwarderArn": world.forwarder_arn,
           "disableAuditLogOnDelete": True}
    counted = session(None)
    requests = Requests(counted)
    cloud, spec = Boto3Cloud(REGION, counted), parse_eks(eks)
    memory = reconcile(cloud, spec, "cluster", Memory(), now_ms=0).memory
    aws.client("eks").update_cluster_config(name=CLUSTER, logging={"clusterLogging": [{"types": ["audit"],
                                                                                        "enabled": False}]})
    memory = reconcile(cloud, spec, "cluster", Memory(True, "an-update"), now_ms=0).memory  # reads the update
    release(cloud, spec, "cluster", memory)
    called = set(requests.take())
    policy = json.loads(kaudit_render(tmp_path, collection(eks), "-o", "json").stdout)["iamPolicy"]
    granted = {action for statement in policy["Statement"] for action in statement["Action"]}
    assert called == granted
    assert iam_action("logs", "put_subscription_filter") == "logs:PutSubscriptionFilter"


@pytest.mark.parametrize("platform, words", [("GKE", ("gcloud logging sinks create", "DATA_READ")),
                                             ("AKS", ("az monitor diagnostic-settings create", "kube-audit-admin"))])
def test_gke_and_aks_print_their_steps(tmp_path, platform, words):
    done = kaudit_render(tmp_path, collection({}, platform))
    assert done.returncode == 0 and all(word in done.stdout for word in words)


def test_a_managed_platform_refuses_node_side_fields_in_one_line_per_field(tmp_path):
    body = collection({"clusterName": CLUSTER, "region": REGION,
                       "forwarderArn": "arn:aws:lambda:us-east-1:123456789012:function:f"})
    body["spec"]["policy"] = {"profile": "WriteRequestBodies"}
    done = kaudit_render(tmp_path, body)
    assert done.returncode == 1 and done.stdout == ""
    assert re.fullmatch(r"error: \S+eks\.yaml:\d+:\d+: spec\.policy: Forbidden: on platform EKS the provider applies "
                        r"its own audit policy, which cannot be changed.*\n", done.stderr)
