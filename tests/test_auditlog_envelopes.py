"""Audit events from managed control planes: GKE's Cloud Audit Logs entries and AKS's resource-log
records are read as the Events they carry, by simulate and eval alike.

The envelopes' shapes come from the providers' public documentation and from tools that read them:

- AKS (diagnostic settings, categories kube-audit and kube-audit-admin): one resource-log record per
  event, ``{"resourceId", "time", "category", "operationName":
  "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read", "properties": {"log", "stream",
  "pod", "containerID"}}``, ``properties.log`` being "the full text of the log from the component":
  the Event's JSON line (learn.microsoft.com, "Enable and review Kubernetes control plane logs in
  AKS", log event schema; the kube-audit sample there has an escaped audit.k8s.io/v1 Event in it).
- GKE: a LogEntry (``insertId``, ``logName`` ``.../cloudaudit.googleapis.com%2Factivity`` or
  ``%2Fdata_access``, ``operation {id, producer: k8s.io, first, last}``, ``resource {type:
  k8s_cluster}``, ``timestamp``) whose ``protoPayload`` is a google.cloud.audit.AuditLog
  (cloud.google.com, Cloud Audit Logs AuditLog reference: serviceName, methodName, resourceName,
  authenticationInfo, authorizationInfo, requestMetadata, request, response, status), with
  ``serviceName: k8s.io``, ``methodName`` ``io.k8s.core.v1.pods.exec.create`` and ``resourceName``
  ``core/v1/namespaces/default/pods/NAME/exec`` (the Falco plugin k8saudit-gke, which rebuilds
  audit.k8s.io Events from these entries the same way: verb = last part of methodName, objectRef
  from resourceName; Wazuh's and Panther's GKE rule tests carry such entries).
"""

from __future__ import annotations

import json
from pathlib import Path

from kaudit.auditlog import decode_event, unwrap
from kaudit.cli.policy import evaluate_lines
from kaudit.policy.evaluate import Evaluator
from kaudit.simulate import simulate
from simulate_support import loaded

REAL = Path(__file__).resolve().parent / "fixtures" / "kube-apiserver-audit.log"

POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  users: ["john.doe@example.com"]
  verbs: [list]
- level: RequestResponse
  resources: [{group: "", resources: [pods/exec]}]
- level: Request
  resources: [{group: apps, resources: [deployments]}]
  namespaces: [shop]
- level: Metadata
"""


def _aks_record(line: bytes) -> bytes:
    record = {
        "resourceId": "/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/AKS1",
        "time": "2026-01-01T00:00:00.0000000Z", "category": "kube-audit",
        "operationName": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
        "properties": {"log": line.decode().rstrip("\n"), "stream": "stdout", "pod": "kube-apiserver-57b5944b45-94w49",
                       "containerID": "d2b8d6f0"},
    }
    return json.dumps(record).encode() + b"\n"


def _gke_entry(method: str, resource_name: str, email: str, *, request=None, response=None, code=0) -> bytes:
    payload = {"@type": "type.googleapis.com/google.cloud.audit.AuditLog",
               "authenticationInfo": {"principalEmail": email},
               "authorizationInfo": [{"granted": True, "permission": method, "resource": resource_name}],
               "methodName": method,
               "requestMetadata": {"callerIp": "35.195.195.195", "callerSuppliedUserAgent": "kubectl/v1.30.0"},
               "resourceName": resource_name, "serviceName": "k8s.io", "status": {"code": code}}
    if request is not None:
        payload["request"] = request
    if response is not None:
        payload["response"] = response
    entry = {"insertId": "ins-1", "logName": "projects/p/logs/cloudaudit.googleapis.com%2Factivity",
             "operation": {"first": True, "id": f"op-{resource_name}", "last": True, "producer": "k8s.io"},
             "protoPayload": payload, "receiveTimestamp": "2026-01-01T00:00:01.5Z",
             "resource": {"labels": {"cluster_name": "c1", "location": "europe-west1", "project_id": "p"},
                          "type": "k8s_cluster"},
             "severity": "NOTICE", "timestamp": "2026-01-01T00:00:01Z"}
    return json.dumps(entry).encode() + b"\n"


def test_an_aks_record_is_the_event_kube_apiserver_wrote():
    lines = REAL.read_bytes().splitlines(keepends=True)
    assert [unwrap(_aks_record(line)) for line in lines] == lines


def test_simulating_aks_records_reports_what_the_plain_log_does(tmp_path):
    plain = tmp_path / "audit.log"
    plain.write_bytes(REAL.read_bytes())
    aks = tmp_path / "PT1H.json"
    aks.write_bytes(b"".join(_aks_record(line) for line in REAL.read_bytes().splitlines(keepends=True)))
    policy = loaded(POLICY)
    expected, got = simulate(policy, [str(plain)]), simulate(policy, [str(aks)])
    assert got["input"]["events"] == expected["input"]["events"] == 25
    assert got["input"]["recordedBytes"] == expected["input"]["recordedBytes"]  # the Events, not the records
    assert got["policy"] == {**expected["policy"], "source": got["policy"]["source"]}


def test_gke_entries_are_read_as_the_requests_they_describe():
    exec_entry = _gke_entry("io.k8s.core.v1.pods.exec.create", "core/v1/namespaces/default/pods/web-1/exec",
                            "jane@example.com")
    event = decode_event(unwrap(exec_entry))
    assert (event.verb, event.user.username, event.user.groups) == ("create", "jane@example.com", None)
    ref = event.objectRef
    assert (ref.resource, ref.namespace, ref.name, ref.apiGroup, ref.subresource) == (
        "pods", "default", "web-1", None, "exec")
    listing = decode_event(unwrap(_gke_entry("io.k8s.apps.v1.deployments.list", "apps/v1/namespaces/shop/deployments",
                                             "jane@example.com")))
    assert (listing.verb, listing.objectRef.resource, listing.objectRef.namespace, listing.objectRef.apiGroup,
            listing.objectRef.name) == ("list", "deployments", "shop", "apps", None)
    cluster = decode_event(unwrap(_gke_entry("io.k8s.core.v1.namespaces.finalize.update",
                                             "core/v1/namespaces/team-a/finalize", "jane@example.com")))
    assert (cluster.objectRef.resource, cluster.objectRef.name, cluster.objectRef.subresource,
            cluster.objectRef.namespace) == ("namespaces", "team-a", "finalize", None)


def test_eval_and_simulate_decide_gke_entries_by_their_request(tmp_path):
    deployment = {"@type": "apps.k8s.io/v1.Deployment", "apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "web", "namespace": "shop"}}
    entries = [
        _gke_entry("io.k8s.core.v1.pods.exec.create", "core/v1/namespaces/default/pods/web-1/exec", "jane@example.com"),
        _gke_entry("io.k8s.core.v1.pods.list", "core/v1/namespaces/default/pods", "john.doe@example.com"),
        _gke_entry("io.k8s.apps.v1.deployments.create", "apps/v1/namespaces/shop/deployments/web", "jane@example.com",
                   request=deployment, response=deployment),
        _gke_entry("io.k8s.apps.v1.deployments.delete", "apps/v1/namespaces/shop/deployments/web", "jane@example.com",
                   code=5),
    ]
    path = tmp_path / "gke.json"
    path.write_bytes(b"".join(entries))
    out = tmp_path / "out"
    with open(path, "rb") as source, open(out, "w") as sink:
        assert evaluate_lines(Evaluator(loaded(POLICY).policy), source, sink) == 0
    assert [json.loads(line)["rule"] for line in out.read_text().splitlines()] == [1, 0, 2, 2]
    doc = simulate(loaded(POLICY), [str(path)])
    assert doc["input"]["events"] == 4 and doc["input"]["malformedLines"] == 0
    assert [rule["matchedEvents"] for rule in doc["policy"]["rules"][:4]] == [1, 1, 2, 0]


def test_an_event_whose_body_mentions_the_envelopes_members_is_not_an_envelope():
    from kaudit.auditlog import envelope

    crd = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "stage": "ResponseComplete",
           "verb": "create", "requestObject": {"spec": {"versions": [{"schema": {"openAPIV3Schema": {
               "properties": {"log": {"type": "string"}, "protoPayload": {"type": "object"}}}}}]}}}
    line = json.dumps(crd).encode() + b"\n"
    assert not envelope(line) and unwrap(line) is line
    assert envelope(_aks_record(REAL.read_bytes().splitlines(keepends=True)[0]))
    assert envelope(_gke_entry("io.k8s.core.v1.pods.get", "core/v1/namespaces/a/pods/b", "x@example.com"))
