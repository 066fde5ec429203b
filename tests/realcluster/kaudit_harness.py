"""kaudit on the real control plane, installed as a user would and run as its chart runs it (no
pytest in here; bench/bench_realcluster.py loads this file by path too).

Two ways in, both giving a :class:`KauditInstall`:

* :func:`install_with_kustomize` is ``kubectl apply -k manifests/`` (after creating the agent
  namespace the RBAC needs), once per session through the ``kaudit_installed`` fixture;
  :meth:`KauditInstall.start_chart_operator` runs ``kaudit run`` as a local process with the
  arguments and environment of the installed operator Deployment, under its ServiceAccount's token
  (the real RBAC); only the probe ports become 0, since several runs share this machine;
* :func:`install` applies the chart's own CRDs, ServiceAccount and RBAC exactly as ``helm template
  charts/kaudit`` renders them (not the Deployment: :meth:`KauditInstall.start_operator` runs the
  operator as a local ``kaudit run`` process under that ServiceAccount's token), for the fault,
  peering and scale scenarios. Each caller picks its own release name and namespaces, so scenarios
  never share an operator identity; AuditCollections are cluster-scoped and kaudit serves only the
  oldest one, so each scenario deletes its collection before it ends (:meth:`KauditInstall.cleanup`).

Then: the collection's children, its conditions, the audit log's requests (writes, permission table).
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from kaudit.k8s import permissions
from plane import CONTROL_PLANE_LABEL, REPO, Api, ControlPlane, Installer, Process, wait_for  # noqa: F401  (Api: for importers)

COLLECTION_LABEL = "kaudit.dev/collection"
APPLIED_HASH = "kaudit.dev/applied-hash"
SECRET_NAME = "datadog-secret"
AGENT_NAMESPACE = "datadog"  # the chart's default rbac.agentNamespaces
CRD = "auditcollections.kaudit.dev"
PORT_FLAGS = ("--liveness-port", "--metrics-port")
NOT_APPLIED = ("Deployment", "PodDisruptionBudget", "Service")  # install(): the operator runs as a local process
# What kaudit renders, as kubectl resources: anywhere, and in the operator namespace only.
CHILD_KINDS = ("configmaps", "serviceaccounts", "daemonsets.apps")
OPERATOR_NAMESPACE_KINDS = ("roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io")


@dataclass
class KauditInstall:
    plane: ControlPlane
    release: str
    namespace: str  # the operator's (the chart's release namespace)
    agent_namespace: str
    deployment: str = ""  # the operator Deployment installed with it (kustomize, helm), if any
    objects: list[dict] = field(default_factory=list)  # what install() applied, for cleanup
    collections: set[str] = field(default_factory=set)
    operators: list[Process] = field(default_factory=list)
    installers: list[Installer] = field(default_factory=list)

    @property
    def service_account(self) -> str:
        return self.release  # the chart's fullname when the release name contains "kaudit"

    def user(self, service_account: str | None = None) -> str:
        return f"system:serviceaccount:{self.namespace}:{service_account or self.service_account}"

    # --- service accounts and operators ----------------------------------------------------------

    def add_service_account(self, name: str) -> None:
        """A second identity with exactly the chart's permissions (every binding copied to it)."""
        items = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": self.namespace}}]
        for binding in (o for o in self.objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
            copied = copy.deepcopy(binding)
            copied["metadata"]["name"] = f"{binding['metadata']['name']}-{name}"
            copied["subjects"] = [{"kind": "ServiceAccount", "name": name, "namespace": self.namespace}]
            items.append(copied)
        self.plane.apply({"apiVersion": "v1", "kind": "List", "items": items})
        self.objects.extend(items)

    def start_operator(self, *args: str, service_account: str | None = None, name: str = "operator") -> Process:
        kubeconfig = self.plane.kubeconfig_for_service_account(self.namespace, service_account or self.service_account)
        process = self.plane.start_operator(*args, kubeconfig=kubeconfig, namespace=self.namespace, name=name)
        self.operators.append(process)
        return process

    def start_chart_operator(self, *extra: str, name: str = "operator") -> Process:
        """``kaudit run`` with the installed Deployment's arguments and plain env, under its ServiceAccount."""
        assert self.deployment, "installed without the operator Deployment: use start_operator"
        deployment = self.plane.get("deployment", "-n", self.namespace, self.deployment)
        args, env = operator_command(deployment)
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == self.service_account
        kubeconfig = self.plane.kubeconfig_for_service_account(self.namespace, self.service_account)
        process = self.plane.start_operator(*args, *extra, kubeconfig=kubeconfig, namespace=self.namespace,
                                            env=env, name=name)
        self.operators.append(process)
        return process

    def start_installers(self, collection: str, workdir: Path) -> list[Installer]:
        """The policy installer on every control-plane node (real ``kaudit install-policy`` processes)."""
        def policy_dir(node: str) -> Path:
            folder = workdir / f"policy-{collection}-{node}"
            folder.mkdir(parents=True, exist_ok=True)
            return folder

        started = self.plane.start_installers(collection=collection, namespace=self.namespace, policy_dir=policy_dir)
        self.installers.extend(started)
        return started

    # --- collections -------------------------------------------------------------------------------

    def managed(self, name: str, **spec: Any) -> dict:
        body = {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": name},
                "spec": {"agent": {"mode": "Managed", "namespace": self.agent_namespace,
                                   "managed": {"apiKeySecretRef": {"name": SECRET_NAME, "key": "api-key"}}},
                         **spec}}
        return body

    def create(self, body: dict) -> None:
        self.collections.add(body["metadata"]["name"])
        self.plane.apply(body)

    def children(self, collection: str) -> dict[tuple[str, str, str], dict]:
        """Every object kaudit renders for ``collection``: (resource, namespace, name) -> object."""
        return {(item["kind"].lower() + "s", item["metadata"]["namespace"], item["metadata"]["name"]): item
                for item in children(self.plane, collection, ",".join(CHILD_KINDS + OPERATOR_NAMESPACE_KINDS))}

    def applied_hashes(self, collection: str) -> dict[tuple[str, str, str], str | None]:
        return {key: (obj["metadata"].get("annotations") or {}).get(APPLIED_HASH)
                for key, obj in self.children(collection).items()}

    def wait_ready(self, name: str, timeout: float = 60.0, generation: int | None = None) -> dict:
        return wait_for(lambda: ready_status(self.plane.get_or_none("auditcollection", name), generation),
                        timeout, f"AuditCollection {name} to be Ready")

    def delete_collection(self, name: str) -> None:
        delete_collection(self.plane, name)
        self.collections.discard(name)

    def cleanup(self) -> None:
        """Stop what this install started and delete its collections (the RBAC stays: it is cheap)."""
        for process in [*self.installers, *self.operators]:
            process.stop()
        for name in list(self.collections):
            # Without the operator no finalizer is handled: drop it, Managed mode has none anyway.
            self.plane.kubectl("patch", "auditcollection", name, "--type=merge", "-p",
                               '{"metadata":{"finalizers":null}}', check=False)
            self.delete_collection(name)


def install(plane: ControlPlane, release: str, namespace: str, agent_namespace: str, *,
            peering: bool = False) -> KauditInstall:
    """The chart's CRDs, namespaces, ServiceAccount and RBAC (and with ``peering`` its
    ClusterKopfPeering), plus the Secret the Managed agent names."""
    for ns in (namespace, agent_namespace):
        ensure_namespace(plane, ns)
    if plane.get_or_none("secret", "-n", agent_namespace, SECRET_NAME) is None:
        plane.kubectl("create", "secret", "generic", "-n", agent_namespace, SECRET_NAME, "--from-literal=api-key=test")
    rendered = plane.helm("template", release, str(REPO / "charts" / "kaudit"), "--namespace", namespace,
                          "--include-crds", "--set", f"rbac.agentNamespaces={{{agent_namespace}}}",
                          "--set", f"replicaCount={2 if peering else 1}").stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] not in NOT_APPLIED]
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    plane.apply({"apiVersion": "v1", "kind": "List", "items": crds})
    for crd in crds:
        plane.wait_established(crd["metadata"]["name"])
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    plane.apply({"apiVersion": "v1", "kind": "List", "items": rest})
    return KauditInstall(plane, release, namespace, agent_namespace, objects=rest)


def ensure_namespace(plane: ControlPlane, name: str) -> None:
    if plane.get_or_none("namespace", name) is None:
        plane.kubectl("create", "namespace", name)


def install_with_kustomize(plane: ControlPlane) -> KauditInstall:
    ensure_namespace(plane, AGENT_NAMESPACE)
    plane.kubectl("apply", "-k", str(REPO / "manifests"))
    plane.wait_established(CRD)
    return KauditInstall(plane, release="kaudit", namespace="kaudit-system", agent_namespace=AGENT_NAMESPACE,
                         deployment="kaudit")


def operator_command(deployment: dict) -> tuple[list[str], dict[str, str]]:
    """The ``kaudit run`` arguments and plain env of the Deployment's operator container."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = [arg for arg in container["args"] if not arg.startswith(PORT_FLAGS)]
    assert args[0] == "run", f"the operator container runs {args!r}, not kaudit run"
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return args[1:] + [f"{flag}=0" for flag in PORT_FLAGS], env


def conditions(plane: ControlPlane, name: str) -> dict[str, dict]:
    found = plane.get_or_none("auditcollection", name) or {}
    return {c["type"]: c for c in found.get("status", {}).get("conditions", [])}


def wait_condition(plane: ControlPlane, name: str, type_: str, *, status: str | None = None,
                   reason: str | None = None, generation: int | None = None, timeout: float = 30.0) -> dict:
    def matches() -> dict | None:
        found = conditions(plane, name).get(type_)
        if not found:
            return None
        if status is not None and found["status"] != status:
            return None
        if reason is not None and found.get("reason") != reason:
            return None
        if generation is not None and found.get("observedGeneration") != generation:
            return None
        return found
    return wait_for(matches, timeout, f"{name}: {type_} status={status} reason={reason} generation={generation}")


def children(plane: ControlPlane, collection: str, kinds: str = "configmaps,serviceaccounts,daemonsets,roles,"
             "rolebindings,leases") -> list[dict]:
    """Every object in any namespace labelled as the collection's."""
    return plane.get(kinds, "-A", "-l", f"{COLLECTION_LABEL}={collection}")["items"]


def delete_collection(plane: ControlPlane, name: str) -> None:
    plane.kubectl("delete", "auditcollection", name, "--ignore-not-found", "--wait=true", "--timeout=60s")


def request_scope(event: dict, operator_namespace: str) -> str:
    return permissions.scope_of_namespace(event["objectRef"].get("namespace"), operator_namespace)


def permission_problems(events: Iterable[dict], operator_namespace: str) -> list[str]:
    """Requests refused (403) or outside kaudit's permission table, one line each."""
    problems = []
    for event in events:
        code = event.get("responseStatus", {}).get("code")
        where = event.get("requestURI", "")
        if code == 403:
            problems.append(f"403 {event['verb']} {where}")
        ref = event.get("objectRef")
        if ref is None:  # discovery (/api, /apis, /version): allowed to every authenticated user
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        scope = request_scope(event, operator_namespace)
        if not permissions.covers(ref.get("apiGroup", ""), resource, event["verb"], scope):
            problems.append(f"not in the permission table: {event['verb']} {ref.get('apiGroup', '')}/{resource}"
                            f" in {scope} ({where})")
    return sorted(set(problems))


def describe(writes: Iterable[dict]) -> list[str]:
    """Audit events as ``verb resource[/subresource] namespace/name``, for assertion messages."""
    lines = []
    for event in writes:
        ref = event.get("objectRef") or {}
        sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
        lines.append(f"{event['verb']} {ref.get('resource')}{sub} {ref.get('namespace', '')}/{ref.get('name', '')}")
    return lines


def ready_status(collection: dict | None, generation: int | None = None) -> dict | None:
    """The collection's status when Ready is True for its current generation (or ``generation``)."""
    if not collection:
        return None
    status = collection.get("status") or {}
    wanted = generation if generation is not None else collection["metadata"].get("generation")
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
    if ready and ready["status"] == "True" and status.get("observedGeneration") == wanted \
            and ready.get("observedGeneration") == wanted:
        return status
    return None


def object_key(event: dict) -> tuple[str, str, str]:
    ref = event.get("objectRef") or {}
    return ref.get("resource", ""), ref.get("namespace", ""), ref.get("name", "")


def successful(events: Iterable[dict]) -> list[dict]:
    return [e for e in events if 200 <= (e.get("responseStatus") or {}).get("code", 0) < 300]


def child_writes(events: Iterable[dict]) -> list[dict]:
    """Writes to objects (not to status, not Events, not the peering object)."""
    return [e for e in events if not (e.get("objectRef") or {}).get("subresource")
            and object_key(e)[0] not in ("events", "auditcollections", "clusterkopfpeerings")]


def rss_kib(process: Process) -> int:
    """Resident memory of the process (kaudit run runs as the Popen child itself, no shell)."""
    assert process.popen is not None
    for line in Path(f"/proc/{process.popen.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {process.name}")


def request_shape(event: dict) -> tuple:
    """What a request was, without its identity: verb, resource, subresource, namespace, name."""
    ref = event.get("objectRef") or {}
    return (event.get("verb"), ref.get("resource"), ref.get("subresource"), ref.get("namespace"),
            ref.get("name") if ref.get("resource") not in ("events",) else None)


def wait_settled(plane: ControlPlane, user: str, seconds: float = 1.5, timeout: float = 30.0) -> None:
    """Wait until ``user`` has sent no request for ``seconds``."""
    def quiet() -> bool:
        mark = plane.audit_mark()
        time.sleep(seconds)
        return not plane.requests_since(mark, user=user, verbs=None)
    wait_for(quiet, timeout, f"{user} to go quiet", interval=0)


def dump(events: Iterable[dict]) -> str:
    """One line per request, for assertion messages."""
    return "\n".join(" ".join(str(part) for part in (e.get("stageTimestamp"), e.get("verb"), *object_key(e),
                                                     (e.get("responseStatus") or {}).get("code"), e.get("userAgent")))
                     for e in events)


NOISE_PAYLOAD = "x" * 1024  # ~1 KiB per ConfigMap: 10 MiB in all, visible in RSS if the operator kept them
CREATE_THREADS = 8


def create_all(plane: ControlPlane, path: str, bodies: list[dict]) -> None:
    """POST every body to ``path``, on CREATE_THREADS kept-alive connections at once."""
    errors: list[str] = []

    def worker(share: list[dict]) -> None:
        api = Api(plane)
        try:
            for body in share:
                status, answer = api.request("POST", path, body)
                if status not in (201, 409):  # 409: already there from an earlier run in this session
                    errors.append(f"{status} {answer.get('message')}")
        finally:
            api.close()

    threads = [threading.Thread(target=worker, args=(bodies[i::CREATE_THREADS],)) for i in range(CREATE_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise AssertionError(f"{len(errors)} creates failed, e.g. {errors[0]}")


def create_config_maps(plane: ControlPlane, namespace: str, count: int) -> None:
    """``count`` unrelated ConfigMaps (no kaudit label) in ``namespace``."""
    bodies = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"noise-{i:05d}"},
               "data": {"payload": NOISE_PAYLOAD}} for i in range(count)]
    create_all(plane, f"/api/v1/namespaces/{namespace}/configmaps", bodies)


def create_daemonsets(plane: ControlPlane, namespace: str, count: int, selector_label: str) -> None:
    """``count`` unrelated DaemonSets on the control-plane nodes (one pod per node each),
    labelled ``selector_label`` (DaemonSets and pods) so they can be found and deleted."""
    bodies = []
    for i in range(count):
        labels = {"app": f"noise-{i:03d}", selector_label: "true"}
        bodies.append({"apiVersion": "apps/v1", "kind": "DaemonSet",
                       "metadata": {"name": f"noise-{i:03d}", "labels": {selector_label: "true"}},
                       "spec": {"selector": {"matchLabels": {"app": labels["app"]}}, "template": {
                           "metadata": {"labels": labels},
                           "spec": {"nodeSelector": {CONTROL_PLANE_LABEL: ""},
                                    "tolerations": [{"operator": "Exists"}],
                                    "containers": [{"name": "noise", "image": "registry.k8s.io/pause:3.10"}]}}}})
    create_all(plane, f"/apis/apps/v1/namespaces/{namespace}/daemonsets", bodies)
