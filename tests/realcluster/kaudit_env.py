"""kaudit installed on the real control plane for the fault and scale scenarios (no pytest in here).

``install(plane, release, ...)`` applies the chart's own CRDs, ServiceAccount and RBAC exactly as
``helm template charts/kaudit`` renders them (not the Deployment: the operator runs as a local
``kaudit run`` process under that ServiceAccount's token, see plane.start_operator). Each caller
picks its own release name and namespaces, so scenarios never share an operator identity;
AuditCollections are cluster-scoped and kaudit serves only the oldest one, so each scenario deletes
its collection before it ends (``KauditInstall.cleanup``).

bench/bench_realcluster.py loads this file by path too.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from plane import CONTROL_PLANE_LABEL, REPO, Api, ControlPlane, Installer, Process, wait_for  # noqa: F401  (Api: for importers)

COLLECTION_LABEL = "kaudit.dev/collection"
APPLIED_HASH = "kaudit.dev/applied-hash"
SECRET_NAME = "datadog-secret"
NOT_APPLIED = ("Deployment", "PodDisruptionBudget", "Service")  # the operator runs as a local process
# (kubectl resource, namespaced in the operator namespace only) of what kaudit renders in Managed mode.
CHILD_KINDS = ("configmaps", "serviceaccounts", "daemonsets.apps")
OPERATOR_NAMESPACE_KINDS = ("roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io")


@dataclass
class KauditInstall:
    plane: ControlPlane
    release: str
    namespace: str  # the operator's (the chart's release namespace)
    agent_namespace: str
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
        """Every object labelled for ``collection``: (resource, namespace, name) -> object."""
        found: dict[tuple[str, str, str], dict] = {}
        selector = f"{COLLECTION_LABEL}={collection}"
        for kind in CHILD_KINDS:
            for item in self.plane.get(kind, "-A", "-l", selector)["items"]:
                found[(kind.split(".")[0], item["metadata"]["namespace"], item["metadata"]["name"])] = item
        for kind in OPERATOR_NAMESPACE_KINDS:
            for item in self.plane.get(kind, "-n", self.namespace, "-l", selector)["items"]:
                found[(kind.split(".")[0], self.namespace, item["metadata"]["name"])] = item
        return found

    def applied_hashes(self, collection: str) -> dict[tuple[str, str, str], str | None]:
        return {key: (obj["metadata"].get("annotations") or {}).get(APPLIED_HASH)
                for key, obj in self.children(collection).items()}

    def wait_ready(self, name: str, timeout: float = 60.0, generation: int | None = None) -> dict:
        return wait_for(lambda: ready_status(self.plane.get_or_none("auditcollection", name), generation),
                        timeout, f"AuditCollection {name} to be Ready")

    def delete_collection(self, name: str) -> None:
        self.plane.kubectl("delete", "auditcollection", name, "--ignore-not-found", "--wait=true", "--timeout=60s")
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
        if plane.get_or_none("namespace", ns) is None:
            plane.kubectl("create", "namespace", ns)
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
