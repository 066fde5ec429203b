"""moto's server as a real AWS endpoint on loopback, and an EKS world made in it.

``MotoServer`` runs ``python -m moto.server`` on a free loopback port (a separate process, as a
real endpoint is) and resets its state between tests; ``world`` makes an EKS cluster, its log
group, a Forwarder Lambda and a Firehose stream the way an AWS account would have them. ``Faults``
answers chosen operations with an AWS error before the request leaves the client, so botocore's
own retries see it as they would see AWS's answer.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass

import pytest

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
CLUSTER = "prod"
GROUP = f"/aws/eks/{CLUSTER}/cluster"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
ENV_CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
               "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "MotoServer":
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto.server exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("moto.server did not answer within 30 s")

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10).read()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def env(self) -> dict[str, str]:
        """What the operator's environment holds for its SDK to use this endpoint (credentials as IRSA
        would give them are out of reach here; static ones stand in)."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.url}


def session(server: MotoServer):
    import boto3

    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


@dataclass
class World:
    cluster_arn: str
    forwarder_arn: str
    firehose_arn: str
    firehose_role_arn: str


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return None\n")
    return buffer.getvalue()


def make_world(sess, *, log_group: bool = True, forwarder_permission: bool = False) -> World:
    """An account with EKS cluster ``prod`` (audit log off, as EKS creates clusters), its log group
    (EKS makes it on the first control-plane log), the Datadog Forwarder and a Firehose stream."""
    iam, eks, logs, lam, firehose = (sess.client(s) for s in ("iam", "eks", "logs", "lambda", "firehose"))
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    role = iam.create_role(RoleName="forwarder", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    cluster = eks.create_cluster(name=CLUSTER, roleArn=role, resourcesVpcConfig={"subnetIds": []},
                                 logging={"clusterLogging": [{"types": ["api", "audit", "authenticator",
                                                                        "controllerManager", "scheduler"],
                                                              "enabled": False}]})["cluster"]
    if log_group:
        logs.create_log_group(logGroupName=GROUP)
    forwarder = lam.create_function(FunctionName="datadog-forwarder", Runtime="python3.12", Role=role,
                                    Handler="index.handler", Code={"ZipFile": _zip()})["FunctionArn"]
    if forwarder_permission:  # as the Forwarder's own template adds it: any log group of the account
        lam.add_permission(FunctionName=forwarder, StatementId="CloudWatchLogsPermission",
                           Action="lambda:InvokeFunction", Principal="logs.amazonaws.com", SourceAccount=ACCOUNT)
    stream = firehose.create_delivery_stream(
        DeliveryStreamName="datadog-logs", DeliveryStreamType="DirectPut",
        HttpEndpointDestinationConfiguration={
            "EndpointConfiguration": {"Url": "https://aws-kinesis-http-intake.logs.datadoghq.com/v1/input",
                                      "Name": "Datadog"},
            "S3Configuration": {"RoleARN": role, "BucketARN": "arn:aws:s3:::datadog-backup"}})
    return World(cluster_arn=cluster["arn"], forwarder_arn=forwarder, firehose_arn=stream["DeliveryStreamARN"],
                 firehose_role_arn=role)


def make_cluster(sess, name: str, *, log_group: bool = True) -> None:
    """Another EKS cluster in the world ``make_world`` made (audit log off), with its log group unless
    EKS is yet to make it."""
    role = sess.client("iam").get_role(RoleName="forwarder")["Role"]["Arn"]
    sess.client("eks").create_cluster(name=name, roleArn=role, resourcesVpcConfig={"subnetIds": []})
    if log_group:
        sess.client("logs").create_log_group(logGroupName=f"/aws/eks/{name}/cluster")


def write_audit_event(sess, stream: str = "kube-apiserver-audit-0123456789abcdef") -> None:
    """One audit event into the cluster's group, as EKS writes it."""
    logs = sess.client("logs")
    try:
        logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    event = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "verb": "get"}
    logs.put_log_events(logGroupName=GROUP, logStreamName=stream,
                        logEvents=[{"timestamp": int(time.time() * 1000), "message": json.dumps(event)}])


_SERVICE_NAMES = {"cloudwatch-logs": "logs"}  # botocore's event names use service ids


def _operation(event_name: str) -> str:
    """``service.Operation`` of a ``before-send.SERVICE-ID.Operation`` event, service as IAM names it."""
    service, operation = event_name.split(".")[1:3]
    return f"{_SERVICE_NAMES.get(service, service)}.{operation}"


class Requests:
    """Counts the requests a session's clients send, by ``service:Operation`` (every attempt counts)."""

    def __init__(self, sess) -> None:
        self.counts: Counter[str] = Counter()
        sess.events.register("before-send", self._count)

    def _count(self, request, **kwargs) -> None:
        self.counts[_operation(kwargs["event_name"]).replace(".", ":")] += 1

    def take(self) -> Counter[str]:
        counts, self.counts = self.counts, Counter()
        return counts


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_):
        yield self._body


class Faults:
    """Answer ``service.Operation`` (botocore's event names: ``eks.DescribeCluster``) with an AWS error,
    ``times`` times (None: always), at the point where the request would go out."""

    def __init__(self, sess) -> None:
        self.planned: dict[str, list] = {}
        self.sent: Counter[str] = Counter()
        sess.events.register("before-send", self._answer)

    def add(self, operation: str, code: str, message: str, *, status: int = 400, times: int | None = None) -> None:
        self.planned[operation] = [code, message, status, times]

    def _answer(self, request, **kwargs):
        from botocore.awsrequest import AWSResponse

        operation = _operation(kwargs["event_name"])
        plan = self.planned.get(operation)
        if plan is None or plan[3] == 0:
            return None
        if plan[3] is not None:
            plan[3] -= 1
        self.sent[operation] += 1
        code, message, status, _ = plan
        body = json.dumps({"__type": code, "message": message, "Message": message}).encode()
        return AWSResponse(request.url, status, {"x-amzn-ErrorType": code, "Content-Type": "application/json"},
                           _Raw(body))


def clean_environment(monkeypatch, server: MotoServer) -> None:
    for name in ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture(scope="module")
def moto_server():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server, monkeypatch):
    """A session on a fresh moto (state reset), the environment pointing every SDK client there."""
    clean_environment(monkeypatch, moto_server)
    moto_server.reset()
    return session(moto_server)
