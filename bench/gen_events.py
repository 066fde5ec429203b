#!/usr/bin/env python3
"""Generate a large, realistic kube-apiserver audit log (audit.k8s.io/v1 Event JSON lines).

    python bench/gen_events.py --size-mb 200 --out /tmp/audit.log [--seed 1]

The same seed gives the same file. The mix imitates a busy cluster: kubelet heartbeats and
lease renewals, controllers and the scheduler (as kube-system service accounts), hundreds of
human users in a few dozen groups working in ~120 namespaces (reads, writes with request and
response bodies, exec, logs, scale), webhooks' token and access reviews, and non-resource
requests (health, metrics, discovery, openapi). Events come as kube-apiserver writes them:
compact JSON, one per line, a RequestReceived and a ResponseComplete event per request (watches
also get ResponseStarted), with level, auditID, stage, requestURI, verb, user, sourceIPs,
userAgent, objectRef, responseStatus, requestObject/responseObject where the level allows,
timestamps and annotations.

The bytes are those of Go's ``encoding/json``, which kube-apiserver's log backend uses
(:func:`go_json`): no spaces; struct members in the Go struct's field order (Event, UserInfo,
ObjectReference, Status, ObjectMeta, PodSpec, Container, VolumeMount...), map keys (labels,
annotations, data, user extra) sorted; ``<``, ``>``, ``&``, U+2028 and U+2029 escaped as
``\u003c``... ; other non-ASCII characters as UTF-8. What the events hold follows what a real
kube-apiserver (1.30 and later) writes: service-account users carry their uid and the claims of
their bound token in ``user.extra``, response bodies the metadata the server set (uid,
resourceVersion, generation, creationTimestamp, managedFields).

Importable: ``iter_events(seed)`` yields event dicts, ``iter_lines(seed)`` their JSON lines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import re
import sys
import uuid
from typing import Iterator

# (api group, version, resource, namespaced, subresources, weight)
RESOURCES = [
    ("", "v1", "pods", True, ("log", "exec", "status", "binding", "eviction", "portforward"), 30),
    ("", "v1", "configmaps", True, (), 10),
    ("", "v1", "secrets", True, (), 8),
    ("", "v1", "services", True, ("status",), 6),
    ("", "v1", "endpoints", True, (), 6),
    ("", "v1", "events", True, (), 12),
    ("", "v1", "namespaces", False, ("status", "finalize"), 3),
    ("", "v1", "nodes", False, ("status", "proxy"), 8),
    ("", "v1", "serviceaccounts", True, ("token",), 5),
    ("", "v1", "persistentvolumeclaims", True, ("status",), 2),
    ("", "v1", "persistentvolumes", False, (), 1),
    ("apps", "v1", "deployments", True, ("scale", "status"), 10),
    ("apps", "v1", "replicasets", True, ("status",), 6),
    ("apps", "v1", "statefulsets", True, ("scale", "status"), 3),
    ("apps", "v1", "daemonsets", True, ("status",), 3),
    ("batch", "v1", "jobs", True, ("status",), 3),
    ("batch", "v1", "cronjobs", True, (), 2),
    ("coordination.k8s.io", "v1", "leases", True, (), 14),
    ("discovery.k8s.io", "v1", "endpointslices", True, (), 6),
    ("networking.k8s.io", "v1", "ingresses", True, ("status",), 2),
    ("networking.k8s.io", "v1", "networkpolicies", True, (), 1),
    ("rbac.authorization.k8s.io", "v1", "roles", True, (), 1),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", True, (), 1),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", False, (), 1),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", False, (), 1),
    ("authentication.k8s.io", "v1", "tokenreviews", False, (), 3),
    ("authorization.k8s.io", "v1", "subjectaccessreviews", False, (), 3),
    ("storage.k8s.io", "v1", "storageclasses", False, (), 1),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", False, ("status",), 1),
    ("monitoring.coreos.com", "v1", "servicemonitors", True, (), 2),
    ("cert-manager.io", "v1", "certificates", True, ("status",), 1),
]
NON_RESOURCE_URLS = [
    ("/healthz", 10), ("/livez", 8), ("/readyz", 8), ("/readyz?verbose", 1), ("/healthz/etcd", 1), ("/metrics", 6),
    ("/version", 4), ("/api", 3), ("/apis", 3), ("/openapi/v2", 1), ("/openapi/v3", 1),
    ("/openapi/v3/apis/apps/v1?hash=4A1B", 1), ("/apis/metrics.k8s.io/v1beta1", 1), ("/logs/kube-apiserver.log", 1),
]
VERB_WEIGHTS = [("get", 30), ("list", 14), ("watch", 8), ("create", 10), ("update", 12), ("patch", 14),
                ("delete", 5), ("deletecollection", 1)]
HTTP = {"get": "GET", "list": "GET", "watch": "GET", "create": "POST", "update": "PUT", "patch": "PATCH",
        "delete": "DELETE", "deletecollection": "DELETE"}
CONTROLLERS = ["replicaset-controller", "deployment-controller", "endpoint-controller", "endpointslice-controller",
               "namespace-controller", "job-controller", "cronjob-controller", "daemon-set-controller",
               "statefulset-controller", "node-controller", "generic-garbage-collector", "resourcequota-controller",
               "horizontal-pod-autoscaler", "pvc-protection-controller", "service-account-controller", "coredns",
               "kube-proxy", "metrics-server"]
IN_POD_CONTROLLERS = frozenset(("coredns", "kube-proxy", "metrics-server"))
TEAMS = ["payments", "search", "checkout", "platform", "data", "ml", "identity", "frontend", "mobile", "infra",
         "billing", "growth", "ads", "risk", "support"]
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete")


# Go's encoding/json escapes these in every string (HTML-safe output, and the two line separators
# JavaScript does not allow in strings); Python's json module writes them as they are.
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPED = re.compile("[<>&\u2028\u2029]")
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode


def go_json(value) -> str:
    """``value`` as Go's ``encoding/json`` writes it. The members of each dict come in the order
    they were inserted: build struct-like dicts in the Go struct's field order, map-like ones
    sorted (:func:`_sorted`). Python's escapes are Go's otherwise: ``\\"``, ``\\\\``, ``\\n``,
    ``\\r``, ``\\t``, ``\\b``, ``\\f`` (Go 1.22 and later) and ``\\u00XX`` for the other
    control characters; these characters cannot occur outside strings, so replacing them in the
    text escapes exactly the ones inside strings."""
    text = _encode(value)
    return _GO_ESCAPED.sub(lambda match: _GO_ESCAPES[match.group()], text) if _GO_ESCAPED.search(text) else text


def _sorted(mapping: dict) -> dict:
    """A Go map: encoding/json writes its keys sorted."""
    return dict(sorted(mapping.items()))


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _weighted(rng: random.Random, pairs):
    items, weights = zip(*pairs)
    return lambda: rng.choices(items, weights)[0]


class _World:
    """Users, namespaces, nodes and object names the generator draws from."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.namespaces = ["default", "kube-system", "kube-public", "kube-node-lease", "monitoring", "ingress-nginx",
                           "cert-manager"] + [f"{t}-{env}" for t in TEAMS for env in ("prod", "staging", "dev", "ci")][:113]
        self.nodes = [f"ip-10-0-{i // 250}-{i % 250 + 1}.ec2.internal" for i in range(60)]
        self.control_plane = self.nodes[:3]
        first = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj",
                 "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yara"]
        self.humans = []
        for i in range(260):
            name = f"{first[i % len(first)]}.{TEAMS[i % len(TEAMS)]}{i // 40 or ''}@example.com"
            groups = ["system:authenticated", f"team:{TEAMS[i % len(TEAMS)]}"]
            if i % 9 == 0:
                groups.append("sre")
            if i % 31 == 0:
                groups.append("system:masters")
            if i % 4 == 0:
                groups.append("developers")
            self.humans.append({"username": name, "uid": str(uuid.UUID(int=rng.getrandbits(128))), "groups": groups})
        self.app_sas = [f"system:serviceaccount:{ns}:{app}" for ns in self.namespaces[7:] for app in ("app", "worker")]
        self._service_accounts: dict[str, dict] = {}
        self.words = ["web", "api", "worker", "cache", "db", "queue", "cron", "gateway", "auth", "search", "etl", "ui"]

    def service_account(self, username: str, groups: list[str], in_pod: bool) -> dict:
        """A service account's UserInfo as kube-apiserver logs it (1.30 and later): its uid and, in
        ``extra``, the bound token's id and, for a token mounted into a pod, the pod and its node.
        Derived from the name, so the same account always looks the same."""
        user = self._service_accounts.get(username)
        if user is None:
            def uid(kind: str) -> str:
                return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{username}"))

            extra = {"authentication.kubernetes.io/credential-id": [f"JTI={uid('token')}"]}
            if in_pod:
                node = self.nodes[int(uid("node")[:8], 16) % len(self.nodes)]
                extra.update({
                    "authentication.kubernetes.io/node-name": [node],
                    "authentication.kubernetes.io/node-uid": [uid(f"node/{node}")],
                    "authentication.kubernetes.io/pod-name": [f"{username.rsplit(':', 1)[-1]}-{uid('pod')[-15:-5]}-{uid('pod')[-5:]}"],
                    "authentication.kubernetes.io/pod-uid": [uid("pod")],
                })
            user = {"username": username, "uid": uid("serviceaccount"), "groups": groups, "extra": _sorted(extra)}
            self._service_accounts[username] = user
        return user

    def object_name(self) -> str:
        rng = self.rng
        return f"{rng.choice(self.words)}-{rng.choice(self.words)}-{rng.getrandbits(20):05x}"


def _pod_body(rng: random.Random, name: str, namespace: str) -> dict:
    containers = []
    for c in range(rng.randint(1, 3)):
        containers.append({
            "name": f"c{c}",
            "image": f"registry.example.com/{rng.choice(TEAMS)}/svc:{rng.randint(1, 400)}.{rng.randint(0, 20)}",
            "ports": [{"containerPort": 8080 + c, "protocol": "TCP"}],
            "env": [{"name": f"VAR_{k}", "value": f"value-{rng.getrandbits(32):08x}"} for k in range(rng.randint(2, 12))],
            "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
            "volumeMounts": [{"name": "config", "readOnly": True, "mountPath": "/etc/config"}],
        })
    return {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": _sorted({"app": name.split("-")[0], "team": rng.choice(TEAMS),
                                        "pod-template-hash": f"{rng.getrandbits(32):x}"}),
                     "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}},
        "spec": {"volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}}],
                 "containers": containers, "restartPolicy": "Always",
                 "nodeSelector": {"kubernetes.io/os": "linux"}, "serviceAccountName": "default"},
    }


def _body(rng: random.Random, group: str, version: str, resource: str, name: str, namespace: str) -> dict:
    if resource in ("pods", "deployments", "replicasets", "statefulsets", "daemonsets", "jobs"):
        pod = _pod_body(rng, name, namespace)
        if resource == "pods":
            return pod
        return {"kind": resource[:-1].capitalize(), "apiVersion": f"{group}/{version}",
                "metadata": pod["metadata"], "spec": {"replicas": rng.randint(1, 12), "template": {"spec": pod["spec"]}}}
    if resource in ("configmaps", "secrets"):
        data = {f"key{k}": f"{rng.getrandbits(64):016x}" * rng.randint(1, 8) for k in range(rng.randint(1, 6))}
        return {"kind": "ConfigMap" if resource == "configmaps" else "Secret", "apiVersion": "v1",
                "metadata": {"name": name, "namespace": namespace}, "data": data}
    if resource == "leases":
        return {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "metadata": {"name": name, "namespace": namespace},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": "2026-01-01T00:00:00.000000Z"}}
    return {"kind": resource.rstrip("s").capitalize(), "apiVersion": f"{group}/{version}" if group else version,
            "metadata": {"name": name, "namespace": namespace} if namespace else {"name": name}}


def _fields(value: dict, depth: int = 2) -> dict:
    """A managedFields ``fieldsV1`` set for the members of ``value`` (sorted, as the server writes it)."""
    fields: dict = {}
    for key in sorted(value):
        child = value[key]
        fields[f"f:{key}"] = _fields(child, depth - 1) if isinstance(child, dict) and depth > 1 else {}
    return fields


def _served(rng: random.Random, body: dict, created: str) -> dict:
    """``body`` as the server returns it: ObjectMeta with what the server set (uid,
    resourceVersion, generation, creationTimestamp, managedFields), in ObjectMeta's field order."""
    sent = body["metadata"]
    metadata = {"name": sent["name"]}
    if "namespace" in sent:
        metadata["namespace"] = sent["namespace"]
    metadata["uid"] = _uid(rng)
    metadata["resourceVersion"] = str(rng.randint(10_000, 9_999_999))
    if "spec" in body:
        metadata["generation"] = rng.randint(1, 40)
    metadata["creationTimestamp"] = created[:19] + "Z"
    for key in ("labels", "annotations"):
        if key in sent:
            metadata[key] = sent[key]
    content = {key: value for key, value in body.items() if key not in ("kind", "apiVersion")}
    metadata["managedFields"] = [{
        "manager": rng.choice(["kubectl-client-side-apply", "kube-controller-manager", "helm", "argocd-controller"]),
        "operation": "Update", "apiVersion": body["apiVersion"], "time": created[:19] + "Z",
        "fieldsType": "FieldsV1", "fieldsV1": _fields(content),
    }]
    return {"kind": body["kind"], "apiVersion": body["apiVersion"], "metadata": metadata,
            **{key: value for key, value in content.items() if key != "metadata"}}


def _uri(group, version, resource, namespace, name, sub, verb) -> str:
    path = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{resource}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    if verb == "list":
        path += "?limit=500"
    elif verb == "watch":
        path += "?allowWatchBookmarks=true&resourceVersion=123456&timeout=7m52s&timeoutSeconds=472&watch=true"
    elif verb in ("patch", "create", "update") and sub != "exec":
        path += "?fieldManager=kubectl-client-side-apply&fieldValidation=Strict" if sub == "" else ""
    return path


def iter_events(seed: int = 1) -> Iterator[dict]:
    """Yield audit events forever, deterministically for ``seed``."""
    rng = random.Random(seed)
    world = _World(rng)
    pick_resource = _weighted(rng, [(r, r[5]) for r in RESOURCES])
    pick_verb = _weighted(rng, VERB_WEIGHTS)
    pick_url = _weighted(rng, NON_RESOURCE_URLS)
    clock = dt.datetime(2026, 3, 1, 8, 0, 0, tzinfo=dt.timezone.utc)
    step = dt.timedelta(microseconds=1800)

    while True:
        clock += step * rng.randint(1, 5)
        actor = rng.random()
        if actor < 0.22:  # a kubelet
            node = rng.choice(world.nodes)
            user = {"username": f"system:node:{node}", "groups": ["system:nodes", "system:authenticated"]}
            agent = "kubelet/v1.33.2 (linux/amd64) kubernetes/a1b2c3d"
            kind = rng.random()
            if kind < 0.4:
                req = ("coordination.k8s.io", "v1", "leases", "kube-node-lease", node, "", rng.choice(["get", "update"]))
            elif kind < 0.7:
                req = ("", "v1", "nodes", "", node, "status", "patch")
            elif kind < 0.85:
                req = ("", "v1", "nodes", "", node, "", "get")
            else:
                ns = rng.choice(world.namespaces)
                verb = rng.choice(["get", "watch", "list"])
                req = ("", "v1", rng.choice(["pods", "secrets", "configmaps"]), ns,
                       world.object_name() if verb == "get" else "", "", verb)
        elif actor < 0.45:  # controllers, scheduler, kube-proxy
            who = rng.random()
            if who < 0.15:
                user = {"username": rng.choice(["system:kube-controller-manager", "system:kube-scheduler"]),
                        "groups": ["system:authenticated"]}
            else:
                sa = rng.choice(CONTROLLERS)
                # The controller manager's own controllers use tokens it requests; the add-ons
                # (coredns, kube-proxy, metrics-server) run in pods with mounted tokens.
                user = world.service_account(
                    f"system:serviceaccount:kube-system:{sa}",
                    ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
                    in_pod=sa in IN_POD_CONTROLLERS)
            agent = "kube-controller-manager/v1.33.2 (linux/amd64) kubernetes/a1b2c3d/system:serviceaccount:kube-system:x"
            group, version, resource, namespaced, subs, _ = pick_resource()
            verb = pick_verb()
            ns = rng.choice(world.namespaces) if namespaced else ""
            name = "" if verb in ("list", "watch", "deletecollection") else world.object_name()
            if resource == "leases" and rng.random() < 0.7:
                ns, name, verb = "kube-system", rng.choice(["kube-controller-manager", "kube-scheduler"]), rng.choice(["get", "update"])
            sub = rng.choice(subs) if subs and name and rng.random() < 0.3 else ""
            req = (group, version, resource, ns, name, sub, verb)
        elif actor < 0.6:  # non-resource
            user = rng.choice([{"username": "system:anonymous", "groups": ["system:unauthenticated"]},
                               world.service_account(
                                   "system:serviceaccount:monitoring:prometheus",
                                   ["system:serviceaccounts", "system:serviceaccounts:monitoring", "system:authenticated"],
                                   in_pod=True),
                               rng.choice(world.humans)])
            agent = rng.choice(["kube-probe/1.33", "Prometheus/2.53.0", "kubectl/v1.33.1 (linux/amd64) kubernetes/e3f4a5b"])
            uri = pick_url()
            req = None
        else:  # people and workloads
            user = rng.choice(world.humans) if rng.random() < 0.7 else world.service_account(
                rng.choice(world.app_sas), ["system:serviceaccounts", "system:authenticated"], in_pod=True)
            agent = rng.choice(["kubectl/v1.33.1 (darwin/arm64) kubernetes/e3f4a5b", "argocd-application-controller/v0.0.0",
                                "helm/v3.15.0", "Go-http-client/2.0", "k9s/v0.32.5 (linux/amd64)"])
            group, version, resource, namespaced, subs, _ = pick_resource()
            verb = pick_verb()
            ns = rng.choice(world.namespaces) if namespaced else ""
            name = "" if verb in ("list", "watch", "deletecollection") or (verb == "create" and rng.random() < 0.5) else world.object_name()
            sub = rng.choice(subs) if subs and name and rng.random() < 0.25 else ""
            if sub in ("exec", "portforward", "eviction", "binding", "token"):
                verb = "create"
            elif sub == "log":
                verb = "get"
            if resource in ("tokenreviews", "subjectaccessreviews"):
                verb, name, sub = "create", "", ""
            req = (group, version, resource, ns, name, sub, verb)

        audit_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        received = clock.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        done = (clock + dt.timedelta(microseconds=rng.randint(300, 90_000))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        source_ip = f"10.{rng.randint(0, 3)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        event = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": audit_id,
                 "stage": "ResponseComplete", "requestURI": "", "verb": "", "user": user, "sourceIPs": [source_ip],
                 "userAgent": agent}
        request_body = response_body = None
        if req is None:
            event["requestURI"] = uri
            event["verb"] = "get"
            code = 200 if rng.random() < 0.97 else 403
        else:
            group, version, resource, ns, name, sub, verb = req
            event["requestURI"] = _uri(group, version, resource, ns, name, sub, verb)
            event["verb"] = verb
            ref = {"resource": resource}
            if ns:
                ref["namespace"] = ns
            if name:
                ref["name"] = name
            if group:
                ref["apiGroup"] = group
            ref["apiVersion"] = version
            if sub:
                ref["subresource"] = sub
            event["objectRef"] = ref
            code = rng.choices([200, 201, 404, 403, 409, 422], [80, 8, 6, 3, 2, 1])[0]
            if verb in ("create", "update", "patch") and resource not in ("secrets", "configmaps", "tokenreviews") \
                    and rng.random() < 0.5:
                level = rng.choice(["Request", "RequestResponse"])
                event["level"] = level
                request_body = _body(rng, group, version, resource, name or world.object_name(), ns)
                if level == "RequestResponse" and code < 300:
                    response_body = _served(rng, request_body, received)
            elif verb == "get" and rng.random() < 0.05 and resource not in ("secrets", "configmaps"):
                event["level"] = "RequestResponse"
                response_body = _served(rng, _body(rng, group, version, resource, name or "x", ns), received)
        # metav1.Status: metadata, status, message, reason, code (its field order).
        status = {"metadata": {}}
        if code >= 400:
            status.update(status="Failure", message=f"request failed with code {code}",
                          reason={403: "Forbidden", 404: "NotFound", 409: "Conflict"}.get(code, "Invalid"))
        status["code"] = code
        event["responseStatus"] = status
        if request_body is not None:
            event["requestObject"] = request_body
        if response_body is not None:
            event["responseObject"] = response_body
        event["requestReceivedTimestamp"] = received
        event["stageTimestamp"] = done
        decision = "allow" if code != 403 else "forbid"
        event["annotations"] = {"authorization.k8s.io/decision": decision,
                                "authorization.k8s.io/reason": "RBAC: allowed by ClusterRoleBinding \"system:basic-user\" "
                                                               "of ClusterRole \"system:basic-user\" to Group \"system:authenticated\""
                                if decision == "allow" else ""}
        # kube-apiserver writes the RequestReceived event first (metadata only), then the others.
        first = {k: v for k, v in event.items()
                 if k not in ("responseStatus", "responseObject", "annotations", "requestObject")}
        first["stage"] = "RequestReceived"
        first["stageTimestamp"] = received
        yield first
        if event["verb"] == "watch":
            started = dict(event, stage="ResponseStarted")
            started.pop("responseObject", None)
            yield started
        yield event


def iter_lines(seed: int = 1) -> Iterator[str]:
    for event in iter_events(seed):
        yield go_json(event) + "\n"


def generate(path: str, size_mb: float, seed: int = 1) -> tuple[int, int]:
    """Write at least ``size_mb`` MiB of events to ``path``; returns (events, bytes)."""
    limit = int(size_mb * 1024 * 1024)
    written = count = 0
    with open(path, "w", encoding="utf-8") as out:
        chunk: list[str] = []
        for line in iter_lines(seed):
            chunk.append(line)
            written += len(line)
            count += 1
            if len(chunk) >= 2000:
                out.write("".join(chunk))
                chunk.clear()
            if written >= limit:
                break
        out.write("".join(chunk))
    return count, written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, required=True, help="stop after this many MiB")
    parser.add_argument("--out", required=True, help="output file")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1); same seed, same file")
    args = parser.parse_args(argv)
    events, size = generate(args.out, args.size_mb, args.seed)
    print(f"wrote {events} events, {size / 1024 / 1024:.1f} MiB to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
