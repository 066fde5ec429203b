"""spec.platform and spec.eks: defaults, every problem named by its field, node-side parts refused."""

from __future__ import annotations

import pytest

from kaudit.api.spec import parse_collection
from kaudit.errors import InvalidInput
from kaudit.platforms.eks.spec import DEFAULT_FILTER_PATTERN, Firehose, Forwarder

FORWARDER = "arn:aws:lambda:us-east-1:123456789012:function:datadog-forwarder"
FIREHOSE = "arn:aws:firehose:us-east-1:123456789012:deliverystream/datadog"
ROLE = "arn:aws:iam::123456789012:role/cwl-to-firehose"


def body(**spec):
    return {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": "c"}, "spec": spec}


def errors(**spec) -> list[str]:
    with pytest.raises(InvalidInput) as raised:
        parse_collection(body(**spec))
    return [f"{e.path}: {e.message}" for e in raised.value.errors]


def test_defaults_and_destinations():
    assert parse_collection(body()).platform == "SelfManaged" and parse_collection(body()).eks is None
    eks = parse_collection(body(platform="EKS", eks={"clusterName": "prod", "region": "us-east-1",
                                                    "forwarderArn": FORWARDER})).eks
    assert eks.destination == Forwarder(FORWARDER) and eks.filter_pattern == DEFAULT_FILTER_PATTERN
    assert eks.add_lambda_permission and not eks.disable_audit_log_on_delete
    assert eks.log_group == "/aws/eks/prod/cluster"
    stream = parse_collection(body(platform="EKS", eks={"clusterName": "prod", "region": "us-east-1",
                                                       "firehoseArn": FIREHOSE, "roleArn": ROLE})).eks
    assert stream.destination == Firehose(FIREHOSE, ROLE)


@pytest.mark.parametrize("eks, expected", [
    (None, "spec.eks: Required value: an object with clusterName, region and a destination"),
    ({"clusterName": "prod", "region": "us-east-1"}, "spec.eks: Required value: exactly one destination"),
    ({"clusterName": "prod", "region": "us-east-1", "forwarderArn": FORWARDER, "firehoseArn": FIREHOSE,
      "roleArn": ROLE}, "spec.eks: Required value: exactly one destination"),
    ({"clusterName": "prod", "region": "us-east-1", "firehoseArn": FIREHOSE}, "spec.eks.roleArn: Required value"),
    ({"clusterName": "prod", "region": "us-east-1", "forwarderArn": FORWARDER, "roleArn": ROLE},
     "spec.eks.roleArn: Forbidden: a Lambda destination takes no role"),
    ({"clusterName": "prod", "region": "eu-west-1", "forwarderArn": FORWARDER},
     "spec.eks.forwarderArn: Invalid value: \"" + FORWARDER + "\": must be in the cluster's region eu-west-1"),
    ({"clusterName": "prod", "region": "us-east-1", "forwarderArn": "datadog-forwarder"},
     "spec.eks.forwarderArn: Invalid value: \"datadog-forwarder\": must be the ARN of a Lambda function"),
    ({"clusterName": "-bad", "region": "us-east-1", "forwarderArn": FORWARDER},
     "spec.eks.clusterName: Invalid value: \"-bad\": must be an EKS cluster name"),
    ({"clusterName": "prod", "region": "us-east-1", "forwarderArn": FORWARDER, "filterPattern": ""},
     "spec.eks.filterPattern: Invalid value: must be 1 to 1024 characters"),
    ({"clusterName": "prod", "regoin": "us-east-1", "forwarderArn": FORWARDER},
     'spec.eks.regoin: unknown field "regoin"; did you mean "region"?'),
])
def test_each_problem_of_spec_eks_is_named(eks, expected):
    assert any(line.startswith(expected) for line in errors(platform="EKS", eks=eks)), errors(platform="EKS", eks=eks)


def test_spec_eks_belongs_to_platform_eks():
    assert errors(eks={"clusterName": "prod"}) == ["spec.eks: Forbidden: spec.eks applies to platform EKS, not SelfManaged"]
    assert errors(platform="Fargate")[0].startswith('spec.platform: Unsupported value: "Fargate"')


@pytest.mark.parametrize("field, value", [("policy", {"omitReadOnly": True}), ("apiServer", {"installPolicy": False}),
                                          ("agent", {"mode": "DaemonSet"}), ("logs", {"service": "k8s"})])
def test_a_node_side_part_that_asks_for_something_is_refused_on_a_managed_platform(field, value):
    assert errors(platform="GKE", **{field: value}) == [
        next(e for e in errors(platform="GKE", **{field: value}) if e.startswith(f"spec.{field}: Forbidden: on platform GKE"))]


def test_defaults_as_the_crd_fills_them_ask_for_nothing():
    collection = parse_collection(body(platform="AKS", policy={"profile": "Default"}, agent={"mode": "Managed"},
                                       apiServer={}, logs={}))
    assert collection.agent.mode == "None" and collection.managed_platform
