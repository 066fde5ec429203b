"""Run the real kaudit operator (kopf + the real renderer) in-process against a kmock API server.

kmock stores objects and streams watch events, but does not implement server-side apply,
selectors, garbage collection, uid or resourceVersion (see the project's facts). ``ApplyEmulator``
adds the one behaviour the scenarios need to make progress — an apply creates a missing object —
and every test that depends on real apply semantics asserts the exact requests instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import json
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import kmock
import kopf
import yaml

from kaudit.installer import lease
from kaudit.k8s import permissions
from kaudit.k8s.client import RetryPolicy
from kaudit.reconcile.handlers import REGISTRY
from kaudit.reconcile.runtime import Options, OperatorMemo, State, close, operator_memo
from kaudit.reconcile.service import OperatorConfig

ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS = "kaudit.dev/v1alpha1/auditcollections"
APPLY = "application/apply-patch+yaml"
_uids = itertools.count(1)
_versions = itertools.count(1000)


class ApplyEmulator(kmock.KubernetesEmulator):
    """kmock plus the API-server behaviours the operator relies on:

    * a server-side apply to a missing object creates it;
    * every write gets a new ``metadata.resourceVersion`` (kopf waits for the version it wrote
      before it trusts a watch event; with a constant version it re-handles stale events);
    * a JSON patch whose resourceVersion ``test`` fails is refused with 422.

    Further applies are stored by kmock's plain dict merge, which matches what kaudit sends for
    the objects it owns; list-merging and field ownership are not emulated.
    """

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and request.method in (kmock.method.PATCH, kmock.method.POST):
            if isinstance(request.data, list) and request.name:
                self._check_json_patch_tests(request)
            version = str(next(_versions))
            if isinstance(request.data, list):
                request.data.append({"op": "replace", "path": "/metadata/resourceVersion", "value": version})
            elif isinstance(request.data, dict):
                request.data.setdefault("metadata", {})["resourceVersion"] = version
        if (request.resource is not None and request.method == kmock.method.PATCH and request.name
                and not request.subresource and request.headers.get("Content-Type", "").startswith(APPLY)):
            key = (request.resource, request.namespace, request.name)
            async with self._lock:
                if key in self._objects and not self._objects[key].deleted:
                    # Merge associative lists by key as the API server does for these types,
                    # instead of kmock's whole-list replacement (which would drop the user's
                    # containers, env and volumes that kaudit's body does not name).
                    request.data.update(merge_by_keys(self._objects[key].raw, request.data))
                else:
                    body = copy.deepcopy(request.data)
                    body.setdefault("metadata", {}).setdefault("uid", f"uid-{next(_uids)}")
                    body["metadata"].setdefault("resourceVersion", "1")
                    if key in self._objects:
                        self._objects[key].create(body)
                    else:
                        self._objects[key] = body
                    await self._buses[request.resource].put({"type": "ADDED", "object": self._objects[key].raw})
        return await super()._handle(request)

    def _check_json_patch_tests(self, request: Any) -> None:
        """A failed ``test`` operation is 422 Unprocessable Entity (kmock answers 500), which is
        how kopf learns that its resourceVersion-guarded patch must wait for a fresher body."""
        stored = _stored(self, request)
        for op in request.data:
            if op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion" and stored is not None:
                if (stored.get("metadata") or {}).get("resourceVersion") != op.get("value"):
                    raise kmock.KubernetesError(status=422, reason="Invalid", message="the test operation failed")


MERGE_KEYS = ("name", "mountPath", "containerPort")


def merge_by_keys(live: Any, applied: Any) -> Any:
    """An approximation of server-side apply's merge (additions only, no field ownership)."""
    if isinstance(live, dict) and isinstance(applied, dict):
        merged = dict(live)
        for key, value in applied.items():
            merged[key] = merge_by_keys(live.get(key), value) if key in live else value
        return merged
    if isinstance(live, list) and isinstance(applied, list) and applied and all(isinstance(i, dict) for i in applied):
        key = next((k for k in MERGE_KEYS if all(k in i for i in applied) and all(isinstance(i, dict) and k in i for i in live)), None)
        if key is not None:
            merged = list(live)
            for item in applied:
                index = next((n for n, old in enumerate(merged) if old.get(key) == item[key]), None)
                if index is None:
                    merged.append(item)
                else:
                    merged[index] = merge_by_keys(merged[index], item)
            return merged
    return applied


def load_yaml(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


def collection(name: str = "cluster", spec: dict | None = None, *, created: str = "2026-01-01T00:00:00Z",
               generation: int = 1) -> dict:
    return {
        "apiVersion": "kaudit.dev/v1alpha1",
        "kind": "AuditCollection",
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "1", "generation": generation,
                     "creationTimestamp": created},
        "spec": spec if spec is not None else {"agent": {"mode": "Managed"}},
    }


def control_plane_node(name: str = "cp-1") -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "1",
                         # The kubelet labels every node with its OS (the Datadog chart selects on it).
                         "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/os": "linux"}},
            "spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}}


def prepare(server: kmock.KubernetesEmulator) -> None:
    server.resources.load_bundled()
    server.resources[COLLECTIONS] = kmock.ResourceInfo(
        kind="AuditCollection", singular="auditcollection", namespaced=False, subresources={"status"},
        verbs={"get", "list", "watch", "patch"})
    server.resources["coordination.k8s.io/v1/leases"] = kmock.ResourceInfo(
        kind="Lease", singular="lease", namespaced=True, verbs={"get", "list", "watch", "patch", "create"})
    server.resources["datadoghq.com/v2alpha1/datadogagents"] = kmock.ResourceInfo(
        kind="DatadogAgent", singular="datadogagent", namespaced=True, verbs={"get", "list", "watch", "patch"})
    server.objects["v1/nodes", None, "cp-1"] = control_plane_node()


def runtime_for(server: kmock.KubernetesEmulator, **overrides: Any) -> OperatorMemo:
    """kopf's memo for an operator against ``server`` (``overrides``: fields of runtime.Options)."""
    url = str(server.url).rstrip("/")

    async def login(**_: Any) -> Any:
        # kopf's own watches: a session that closes connections at once (no 5 s shutdown wait).
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        return kopf.AiohttpSession(server=url, aiohttp_session=session)

    options: dict[str, Any] = dict(
        config=OperatorConfig(namespace="kaudit-system", image="kaudit/kaudit:test"),
        recheck_delay=0.01,
        status_hold=0.05,  # progress statuses still coalesce, without seconds of waiting per test
        login=login, force_close=True, retry=RetryPolicy(attempts=4, first_delay=0.001, max_delay=0.01),
    )
    options.update(overrides)
    return operator_memo(Options(**options), State(connection_info=kopf.ConnectionInfo(server=url)))


def _stored(server: kmock.KubernetesEmulator, request: Any) -> Any:
    key = (request.resource, request.namespace, request.name)
    return server.objects[key] if key in server.objects and not server.objects[key].deleted else None


def live_object(server: kmock.KubernetesEmulator, plural: str, namespace: str | None, name: str) -> Any:
    for (resource, obj_namespace, obj_name), obj in list(server.objects.items()):
        if resource.plural == plural and obj_namespace == namespace and obj_name == name and not obj.deleted:
            return obj
    return None


async def fake_installer(server: kmock.KubernetesEmulator, node: str = "cp-1") -> None:
    """Plays the node-side policy installer on one control-plane node: whenever a policy
    ConfigMap appears or changes, it reports the installed hash in a Lease through the API
    exactly as the installer's own report body says."""
    while True:
        for (resource, namespace, name), obj in list(server.objects.items()):
            if resource.plural != "configmaps" or obj.deleted or not name.endswith("-policy"):
                continue
            meta = obj.get("metadata") or {}
            collection_name = (meta.get("labels") or {}).get("kaudit.dev/collection")
            digest = (meta.get("annotations") or {}).get("kaudit.dev/policy-hash")
            if not collection_name or not digest:
                continue
            report = live_object(server, "leases", namespace, lease.report_name(collection_name, node))
            if report is not None and report["metadata"]["annotations"].get(lease.ANNOTATION_HASH) == digest:
                continue  # already reported: the installer rewrites nothing when nothing changed
            now = datetime.datetime.now(datetime.timezone.utc)
            body = lease.report_lease(
                lease.Identity(collection=collection_name, node=node, namespace=namespace),
                policy_file="/etc/kubernetes/audit-policies/policy.yaml", installed_hash=digest,
                installed_at=now, error="", now=now, lease_seconds=3600)
            path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
            if report is not None:
                await server.patch(f"{path}/{body['metadata']['name']}", json=body)
            else:
                await server.post(path, json={**body, "metadata": {**body["metadata"], "uid": f"uid-{next(_uids)}"}})
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running_operator(server: kmock.KubernetesEmulator, runtime: OperatorMemo | None = None, *,
                           installer: bool = True, **operator_options: Any) -> AsyncIterator[OperatorMemo]:
    """kopf.operator() in this event loop (``operator_options`` go to it, e.g. liveness_endpoint);
    returns once its watches are established."""
    runtime = runtime or runtime_for(server)
    helpers = [asyncio.create_task(fake_installer(server))] if installer else []
    seen_before = len(list(server))
    task = asyncio.create_task(kopf.operator(registry=REGISTRY, memo=runtime, clusterwide=True, standalone=True,
                                             **operator_options))
    try:
        await until(lambda: _watching(server, seen_before), timeout=10)
        yield runtime
    finally:
        for helper in helpers:
            helper.cancel()
        task.cancel()
        await asyncio.gather(task, *helpers, return_exceptions=True)
        await close(runtime)


def _watching(server: kmock.KubernetesEmulator, since: int) -> bool:
    plurals = {r.params.get("watch") and r.resource.plural for r in list(server)[since:] if r.resource is not None}
    return {"auditcollections", "configmaps", "daemonsets", "serviceaccounts"} <= plurals


async def until(predicate: Any, timeout: float = 5.0, interval: float = 0.005) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def status_of(server: kmock.KubernetesEmulator, name: str = "cluster") -> dict:
    return dict(server.objects[COLLECTIONS, None, name].get("status") or {})


def condition(server: kmock.KubernetesEmulator, type_: str, name: str = "cluster") -> dict:
    for c in status_of(server, name).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


def is_ready(server: kmock.KubernetesEmulator, name: str = "cluster") -> bool:
    return condition(server, "Ready", name).get("status") == "True"


def writes(server: kmock.KubernetesEmulator, since: int = 0, *, events: bool = False) -> list[Any]:
    """Write requests (not GET), optionally including Event posts."""
    found = []
    for request in list(server)[since:]:
        if request.method == kmock.method.GET:
            continue
        if not events and request.resource is not None and request.resource.plural == "events":
            continue
        found.append(request)
    return found


def describe(request: Any) -> tuple[str, str]:
    return str(request.method), request.url.path


def body_of(request: Any) -> dict:
    return json.loads(request.body)


# --- what the operator asked the API server, as RBAC sees it --------------------------------------

# The operator's own client and kopf identify themselves; the tests' direct requests (kmock's
# client: creating collections, playing the installer) do not count as the operator's.
OPERATOR_USER_AGENTS = ("kaudit-operator", "kopf/")


def rbac_requests(server: kmock.KubernetesEmulator, operator_namespace: str = "kaudit-system"
                  ) -> set[tuple[str, str, str, str]]:
    """(verb, group, resource, scope) of every resource request the operator sent.

    Verbs as the API server authorises them: GET is get/list/watch, POST create, DELETE delete,
    PATCH patch. A server-side apply of an object kaudit owns (it carries kaudit's controller
    owner reference) may create it, which needs ``create`` too. Discovery requests (no resource)
    are allowed to every authenticated client and are left out.
    """
    found = set()
    for request in list(server):
        agent = request.headers.get("User-Agent", "")
        if request.resource is None or request.resource.plural is None or not agent.startswith(OPERATOR_USER_AGENTS):
            continue
        group = request.resource.group or ""
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        scope = permissions.scope_of_namespace(request.namespace, operator_namespace)
        verbs = []
        if request.method == kmock.method.GET:
            watching = str(request.params.get("watch", "")).lower() in ("true", "1")
            verbs.append("get" if request.name else "watch" if watching else "list")
        elif request.method == kmock.method.POST:
            verbs.append("create")
        elif request.method == kmock.method.DELETE:
            verbs.append("delete")
        elif request.method == kmock.method.PATCH:
            verbs.append("patch")
            if request.headers.get("Content-Type", "").startswith(APPLY) and _owned_body(request):
                verbs.append("create")
        else:
            verbs.append(str(request.method).rsplit(".", 1)[-1].lower())
        found.update((verb, group, resource, scope) for verb in verbs)
    return found


def _owned_body(request: Any) -> bool:
    try:
        body = json.loads(request.body)
    except ValueError:
        return False
    refs = (body.get("metadata") or {}).get("ownerReferences") or [] if isinstance(body, dict) else []
    return any(ref.get("controller") for ref in refs)


def uncovered_requests(server: kmock.KubernetesEmulator, operator_namespace: str = "kaudit-system") -> list[str]:
    """The operator's requests that kaudit.k8s.permissions.PERMISSIONS does not cover."""
    return sorted(f"{verb} {group or 'core'}/{resource} ({scope})"
                  for verb, group, resource, scope in rbac_requests(server, operator_namespace)
                  if not permissions.covers(group, resource, verb, scope))


def closed_schema(node: dict) -> dict:
    """An openAPIV3Schema with unknown properties refused, as the API server's pruning would drop
    them: validating against it shows a field the CRD lacks."""
    node = dict(node)
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        node["additionalProperties"] = False
        node["properties"] = {k: closed_schema(v) for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = closed_schema(node["items"])
    if isinstance(node.get("additionalProperties"), dict):  # maps of objects (DatadogAgent overrides)
        node["additionalProperties"] = closed_schema(node["additionalProperties"])
    return node
