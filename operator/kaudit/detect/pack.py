"""kaudit's built-in detection pack for ``source:kubernetes.audit``, in its own words.

Each entry is a Datadog log detection rule (API JSON, what ``kaudit rules render`` writes), the
least audit level its fields need, and two example event sets: ``fires`` raises a signal, ``twin``
(the nearest harmless request) must not. The events are audit.k8s.io/v1 Events as kube-apiserver
writes them at RequestResponse; the tests and the real-cluster suite check both.

Rules are tagged ``managed-by:kaudit`` and ``kaudit:pack``, so a fleet sharing one Datadog
organisation can tell them from its own (see docs/detection.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from kaudit.detect.model import MANAGED_TAG, Rule

TAGS = [MANAGED_TAG, "kaudit:pack", "source:kubernetes.audit"]
_CONNECT_OK = "@http.status_code:[101 TO 299]"
_NOT_CONTROL_PLANE = ("-@usr.name:system\\:serviceaccount\\:kube-system\\:* -@usr.name:system\\:node\\:* "
                      "-@usr.name:(system\\:kube-controller-manager OR system\\:kube-scheduler)")
_PUBLIC_PATHS = "(/healthz* OR /livez* OR /readyz* OR /version*)"


@dataclass(frozen=True)
class PackRule:
    id: str
    rule: dict[str, Any]  # Datadog API JSON (a create payload)
    needs: str  # least audit level: Metadata, Request or RequestResponse
    fires: tuple[dict[str, Any], ...]
    twin: tuple[dict[str, Any], ...]


def event(verb: str, resource: str = "", *, user: str = "alice@example.com",
          groups: tuple[str, ...] = ("system:authenticated",),
          namespace: str = "", name: str = "", subresource: str = "", group: str = "", code: int = 200,
          body: dict[str, Any] | None = None, uri: str = "", decision: str = "allow", time: str = "2026-01-05T10:00:00Z",
          seq: int = 0) -> dict[str, Any]:
    """A complete ResponseComplete audit event at RequestResponse (a builder for the examples)."""
    version = "v1"
    prefix = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    path = uri
    if resource and not uri:
        path = prefix + (f"/namespaces/{namespace}" if namespace else "") + f"/{resource}"
        if name and verb != "create" or subresource:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
    out: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
        "auditID": f"00000000-0000-4000-8000-{seq:012d}", "stage": "ResponseComplete",
        "requestURI": path, "verb": verb, "user": {"username": user, "groups": list(groups)},
        "sourceIPs": ["10.0.0.7"], "userAgent": "kubectl/v1.34.0",
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": time, "stageTimestamp": time,
        "annotations": {"authorization.k8s.io/decision": decision, "authorization.k8s.io/reason": ""},
    }
    if resource:
        ref = {"resource": resource, "apiVersion": version}
        for key, value in (("namespace", namespace), ("name", name), ("subresource", subresource),
                           ("apiGroup", group)):
            if value:
                ref[key] = value
        out["objectRef"] = ref
    if body is not None:
        out["requestObject"] = body
    return out


def _pod(*, privileged: bool = False, host_network: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "registry.example/app:1"}
    if privileged:
        container["securityContext"] = {"privileged": True}
    spec: dict[str, Any] = {"containers": [{"name": "sidecar", "image": "registry.example/side:1"}, container]}
    if host_network:
        spec["hostNetwork"] = True
    return {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "web"}, "spec": spec}


def _rule(name: str, message: str, query: str, status: str, *, condition: str = "a > 0",
          group_by: tuple[str, ...] = ("@usr.name",), window: int = 300, new_value: str = "") -> dict[str, Any]:
    rule: dict[str, Any] = {
        "name": name, "type": "log_detection", "isEnabled": True, "message": message, "tags": list(TAGS),
        "queries": [{"query": f"source:kubernetes.audit {query}", "aggregation": "count",
                     "groupByFields": list(group_by), "distinctFields": []}],
        "cases": [{"name": status, "status": status, "condition": condition}],
        "options": {"detectionMethod": "threshold", "evaluationWindow": window, "keepAlive": 3600,
                    "maxSignalDuration": 86400},
    }
    if new_value:
        rule["queries"][0].update(aggregation="new_value", metrics=[new_value])
        rule["cases"][0]["condition"] = ""
        rule["options"] = {"detectionMethod": "new_value", "evaluationWindow": 0, "keepAlive": 0,
                           "maxSignalDuration": 0,
                           "newValueOptions": {"forgetAfter": 28, "learningDuration": 7,
                                               "learningMethod": "duration", "learningThreshold": 0}}
    return rule


def _pack() -> tuple[PackRule, ...]:
    pod: dict[str, Any] = {"namespace": "shop", "name": "web"}
    deny = [event("list", "secrets", namespace="shop", user="mallory@example.com", code=403, decision="forbid",
                  time=f"2026-01-05T10:00:{i:02d}Z", seq=i) for i in range(11)]
    spread = [dict(e, user={"username": f"user{i}@example.com", "groups": ["system:authenticated"]})
              for i, e in enumerate(deny)]
    learn = [event("get", "secrets", namespace="shop", name="db", user="ci-bot@example.com",
                   time="2026-01-01T09:00:00Z", seq=1)]
    later = "2026-01-12T09:00:00Z"
    return (
        PackRule("kaudit-pod-exec", _rule(
            "kaudit: shell opened in a pod (exec)",
            "{{@usr.name}} opened an exec session in pod {{@objectRef.name}} of {{@objectRef.namespace}}. "
            "An interactive command in a running container bypasses the image and the deployment history.",
            f"@objectRef.resource:pods @objectRef.subresource:exec @http.method:(create OR get) {_CONNECT_OK}",
            "medium"), "Metadata",
            (event("create", "pods", subresource="exec", code=101, **pod),),
            (event("create", "pods", subresource="exec", code=403, decision="forbid", **pod),)),
        PackRule("kaudit-pod-attach", _rule(
            "kaudit: terminal attached to a pod",
            "{{@usr.name}} attached to the main process of pod {{@objectRef.name}} in {{@objectRef.namespace}}.",
            f"@objectRef.resource:pods @objectRef.subresource:attach @http.method:(create OR get) {_CONNECT_OK}",
            "medium"), "Metadata",
            (event("create", "pods", subresource="attach", code=101, **pod),),
            (event("get", "pods", subresource="log", **pod),)),
        PackRule("kaudit-anonymous-allowed", _rule(
            "kaudit: anonymous request allowed",
            "An unauthenticated request to {{@http.url_details.path}} was authorized. Only the public "
            "health and version endpoints should answer anonymous callers.",
            f"@usr.name:\"system:anonymous\" @annotations.authorization.k8s.io/decision:allow "
            f"-@http.url_details.path:{_PUBLIC_PATHS}",
            "high", group_by=("@http.url_details.path",)), "Metadata",
            (event("list", "configmaps", namespace="shop", user="system:anonymous",
                   groups=("system:unauthenticated",)),),
            (event("get", uri="/version", user="system:anonymous", groups=("system:unauthenticated",)),)),
        PackRule("kaudit-privileged-pod", _rule(
            "kaudit: privileged pod created",
            "{{@usr.name}} created pod {{@objectRef.name}} in {{@objectRef.namespace}} with a privileged "
            "container, which has every capability of the node's root user.",
            "@objectRef.resource:pods @http.method:create "
            "(@requestObject.spec.containers.securityContext.privileged:true OR "
            "@requestObject.spec.initContainers.securityContext.privileged:true)",
            "high"), "Request",
            (event("create", "pods", namespace="shop", name="web", code=201, body=_pod(privileged=True)),),
            (event("create", "pods", namespace="shop", name="web", code=201, body=_pod()),)),
        PackRule("kaudit-host-network-pod", _rule(
            "kaudit: pod created on the node's network",
            "{{@usr.name}} created pod {{@objectRef.name}} in {{@objectRef.namespace}} with hostNetwork: it "
            "sees every interface of the node and can reach services bound to localhost there.",
            "@objectRef.resource:pods @http.method:create @requestObject.spec.hostNetwork:true",
            "medium"), "Request",
            (event("create", "pods", namespace="shop", name="web", code=201, body=_pod(host_network=True)),),
            (event("create", "pods", namespace="shop", name="web", code=201, body=_pod()),)),
        PackRule("kaudit-nodeport-service", _rule(
            "kaudit: service exposed on every node (NodePort)",
            "{{@usr.name}} made service {{@objectRef.name}} in {{@objectRef.namespace}} a NodePort: it now "
            "listens on a port of every node, often outside the load balancer and its filters.",
            "@objectRef.resource:services @http.method:(create OR update OR patch) @requestObject.spec.type:NodePort",
            "low"), "Request",
            (event("create", "services", namespace="shop", name="web", code=201,
                   body={"kind": "Service", "spec": {"type": "NodePort", "ports": [{"port": 80}]}}),),
            (event("create", "services", namespace="shop", name="web", code=201,
                   body={"kind": "Service", "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}),)),
        PackRule("kaudit-cluster-admin-binding", _rule(
            "kaudit: cluster-admin granted",
            "{{@usr.name}} bound the cluster-admin role ({{@objectRef.resource}} {{@objectRef.name}}): the "
            "subjects can now do anything in the cluster.",
            "@objectRef.resource:(clusterrolebindings OR rolebindings) @http.method:(create OR update OR patch) "
            "@requestObject.roleRef.name:cluster-admin",
            "high"), "Request",
            (event("create", "clusterrolebindings", group="rbac.authorization.k8s.io", name="ops-admin", code=201,
                   body={"kind": "ClusterRoleBinding", "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
                         "subjects": [{"kind": "User", "name": "bob@example.com"}]}),),
            (event("create", "clusterrolebindings", group="rbac.authorization.k8s.io", name="ops-view", code=201,
                   body={"kind": "ClusterRoleBinding", "roleRef": {"kind": "ClusterRole", "name": "view"},
                         "subjects": [{"kind": "User", "name": "bob@example.com"}]}),)),
        PackRule("kaudit-admission-webhook", _rule(
            "kaudit: admission webhook configuration changed",
            "{{@usr.name}} changed {{@objectRef.resource}} {{@objectRef.name}}. An admission webhook sees, "
            "and can rewrite or block, every object it is registered for.",
            "@objectRef.apiGroup:admissionregistration.k8s.io "
            "@objectRef.resource:(mutatingwebhookconfigurations OR validatingwebhookconfigurations) "
            "@http.method:(create OR update OR patch OR delete)",
            "medium"), "Metadata",
            (event("create", "mutatingwebhookconfigurations", group="admissionregistration.k8s.io",
                   name="injector", code=201),),
            (event("list", "mutatingwebhookconfigurations", group="admissionregistration.k8s.io"),)),
        PackRule("kaudit-permission-enumeration", _rule(
            "kaudit: permissions enumerated",
            "{{@usr.name}} asked the API server for the list of everything it may do (SelfSubjectRulesReview, "
            "as 'kubectl auth can-i --list' does): a common first step after stealing credentials.",
            f"@objectRef.resource:selfsubjectrulesreviews @http.method:create {_NOT_CONTROL_PLANE}",
            "low"), "Metadata",
            (event("create", "selfsubjectrulesreviews", group="authorization.k8s.io", code=201),),
            (event("create", "selfsubjectaccessreviews", group="authorization.k8s.io", code=201),)),
        PackRule("kaudit-kube-namespace-workload", _rule(
            "kaudit: pod or service account created in a kube- namespace",
            "{{@usr.name}} created {{@objectRef.resource}} {{@objectRef.name}} in {{@objectRef.namespace}}. "
            "The kube- namespaces belong to the control plane; objects there blend in with its own.",
            f"@objectRef.resource:(pods OR serviceaccounts) -@objectRef.subresource:* @objectRef.namespace:kube-* "
            f"@http.method:create {_NOT_CONTROL_PLANE}",
            "medium"), "Metadata",
            (event("create", "serviceaccounts", namespace="kube-system", name="helper", code=201),),
            (event("create", "serviceaccounts", namespace="shop", name="helper", code=201),)),
        PackRule("kaudit-denied-burst", _rule(
            "kaudit: many denied requests from one identity",
            "{{@usr.name}} was refused more than 10 requests in 5 minutes: probing for permissions, or a "
            "workload running with the wrong credentials.",
            "@http.status_code:403", "medium", condition="a > 10"), "Metadata",
            tuple(deny), tuple(spread)),
        PackRule("kaudit-secret-read-new-identity", _rule(
            "kaudit: secret read by a new identity",
            "{{@usr.name}} read secrets for the first time (after a week of learning who usually does).",
            "@objectRef.resource:secrets @http.method:(get OR list OR watch) @http.status_code:[200 TO 299]",
            "medium", group_by=(), new_value="@usr.name"), "Metadata",
            tuple(learn) + (event("get", "secrets", namespace="shop", name="db", user="mallory@example.com",
                                  time=later, seq=2),),
            tuple(learn) + (event("get", "secrets", namespace="shop", name="db", user="ci-bot@example.com",
                                  time=later, seq=2),)),
    )


PACK: tuple[PackRule, ...] = _pack()


def pack_rules() -> list[Rule]:
    """The pack as :class:`kaudit.detect.model.Rule` objects (through the same loader as user files)."""
    from kaudit.detect.loaders import rules_from_api

    return rules_from_api([copy.deepcopy(entry.rule) for entry in PACK], "pack")


def pack_entry(rule_name: str) -> PackRule:
    for entry in PACK:
        if entry.rule["name"] == rule_name:
            return entry
    raise KeyError(rule_name)
