"""Hand-built audit events and policies for the simulate tests.

Events are serialized the way kube-apiserver writes them: compact JSON, members in the Go struct
order of audit.k8s.io/v1 Event. All test strings are ASCII without ``<``, ``>`` or ``&``, so
Python's compact ``json.dumps`` produces exactly the bytes Go's encoder would; the oracle
:func:`written_size` therefore *is* "the line kube-apiserver would write", built independently
of the estimator (which measures spans in the recorded line instead).
"""

from __future__ import annotations

import copy
import json

from kaudit.policy import load_policy
from kaudit.simulate import LoadedPolicy, PolicySource

TS = "2026-01-01T00:00:00.000000Z"


def event(
    n: int, level: str, stage: str, verb: str, user: str | None, *, uri: str = "/", resource: str | None = None,
    group: str = "", namespace: str = "", name: str = "", subresource: str = "", request=None, response=None,
    code: int = 200,
) -> dict:
    ev: dict = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": level, "auditID": f"id-{n}",
                "stage": stage, "requestURI": uri, "verb": verb}
    if user is not None:
        ev["user"] = {"username": user, "groups": ["system:authenticated"]}
    ev["sourceIPs"] = ["10.0.0.1"]
    if resource:
        ref = {"resource": resource}
        if namespace:
            ref["namespace"] = namespace
        if name:
            ref["name"] = name
        if group:
            ref["apiGroup"] = group
        ref["apiVersion"] = "v1"
        if subresource:
            ref["subresource"] = subresource
        ev["objectRef"] = ref
    if stage != "RequestReceived":
        ev["responseStatus"] = {"metadata": {}, "code": code}
    if request is not None:
        ev["requestObject"] = request
    if response is not None:
        ev["responseObject"] = response
    ev["requestReceivedTimestamp"] = TS
    ev["stageTimestamp"] = TS
    return ev


def line(ev: dict) -> bytes:
    return json.dumps(ev, separators=(",", ":")).encode() + b"\n"


def written_size(ev: dict, level: str, *, omit_managed_fields: bool = False) -> int:
    """The oracle: bytes of the event kube-apiserver would write at ``level``."""
    out = copy.deepcopy(ev)
    out["level"] = level
    if level in ("None", "Metadata"):
        out.pop("requestObject", None)
    if level != "RequestResponse":
        out.pop("responseObject", None)
    if omit_managed_fields:
        for key in ("requestObject", "responseObject"):
            if key == "requestObject" and out.get("verb") == "patch":
                continue
            body = out.get(key)
            if isinstance(body, dict):
                for obj in [body] + list(body.get("items", [])) + [r.get("object") for r in body.get("rows", [])]:
                    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
                        obj["metadata"].pop("managedFields", None)
    return len(line(out))


def managed(name: str) -> dict:
    """Object metadata with one managedFields entry, as a recording without omitManagedFields keeps it."""
    return {"name": name, "managedFields": [{"manager": "kubectl", "operation": "Update",
                                              "fieldsV1": {"f:data": {"f:k": {}}}}]}


def loaded(text: str, label: str = "test policy") -> LoadedPolicy:
    result = load_policy(text)
    assert result.ok, result.errors
    return LoadedPolicy(result.policy, PolicySource(label, "0" * 64))


POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
omitManagedFields: true
rules:
- level: None                     # rule 0
  nonResourceURLs: ["/healthz"]
- level: Metadata                 # rule 1
  resources: [{group: "", resources: ["secrets"]}]
- level: RequestResponse          # rule 2
  resources: [{group: "", resources: ["configmaps"]}]
  omitStages: ["ResponseStarted"]
- level: Request                  # rule 3
  verbs: ["create", "update", "patch"]
"""

EVERYTHING_METADATA = """
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
"""


def scenario() -> list[dict]:
    """Eight events, one per situation the report distinguishes (see test_simulate_core)."""
    secret = {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s1"}, "data": {"k": "dg=="}}
    secret_out = {"kind": "Secret", "apiVersion": "v1", "metadata": managed("s1"), "data": {"k": "dg=="}}
    cm_in = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": managed("c1"), "data": {"k": "v"}}
    cm_out = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": managed("c1"), "data": {"k": "v2"}}
    deploy = {"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "d1"}, "spec": {"replicas": 1}}
    return [
        # e1: health probe -> rule 0 (None)
        event(1, "Metadata", "ResponseComplete", "get", "system:anonymous", uri="/healthz"),
        # e2: secret create recorded with both bodies -> rule 1 (Metadata): both bodies go
        event(2, "RequestResponse", "ResponseComplete", "create", "alice", uri="/api/v1/namespaces/a/secrets",
              resource="secrets", namespace="a", name="s1", request=secret, response=secret_out, code=201),
        # e3: configmap get recorded at Metadata -> rule 2 (RequestResponse): response body missing
        event(3, "Metadata", "ResponseComplete", "get", "bob", uri="/api/v1/namespaces/a/configmaps/c1",
              resource="configmaps", namespace="a", name="c1"),
        # e4: configmap update with bodies holding managedFields -> rule 2 (RequestResponse), fields stripped
        event(4, "RequestResponse", "ResponseComplete", "update", "bob", uri="/api/v1/namespaces/a/configmaps/c1",
              resource="configmaps", namespace="a", name="c1", request=cm_in, response=cm_out),
        # e5: deployment create -> rule 3 (Request): the response body goes
        event(5, "RequestResponse", "ResponseComplete", "create", "carol",
              uri="/apis/apps/v1/namespaces/a/deployments", resource="deployments", group="apps", namespace="a",
              name="d1", request=deploy, response=deploy, code=201),
        # e6: the same request's RequestReceived event -> rule 3, stage omitted by the policy
        event(6, "Request", "RequestReceived", "create", "carol", uri="/apis/apps/v1/namespaces/a/deployments",
              resource="deployments", group="apps", namespace="a", name="d1"),
        # e7: pod list -> no rule matches (None)
        event(7, "Metadata", "ResponseComplete", "list", "dave", uri="/api/v1/pods", resource="pods"),
        # e8: configmap watch, ResponseStarted -> rule 2, stage omitted by the rule
        event(8, "Metadata", "ResponseStarted", "watch", "bob", uri="/api/v1/configmaps?watch=1",
              resource="configmaps"),
    ]
