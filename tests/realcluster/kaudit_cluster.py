"""kaudit on the real control plane: installed as a user would, run as its chart runs it.

* :func:`install_with_kustomize` is ``kubectl apply -k manifests/`` (after creating the agent
  namespace the RBAC needs), once per session through the ``kaudit_installed`` fixture;
* :func:`start_chart_operator` runs ``kaudit run`` as a local process with the arguments and
  environment of the installed operator Deployment, under its ServiceAccount's token (the real
  RBAC); only the probe ports become 0, since several runs share this machine;
* :func:`permission_problems` checks audit events against kaudit's permission table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from kaudit.k8s import permissions
from plane import REPO, ControlPlane, Process, wait_for

AGENT_NAMESPACE = "datadog"  # the chart's default rbac.agentNamespaces
COLLECTION_LABEL = "kaudit.dev/collection"
CRD = "auditcollections.kaudit.dev"
PORT_FLAGS = ("--liveness-port", "--metrics-port")


@dataclass(frozen=True)
class Installation:
    namespace: str  # the operator namespace (POD_NAMESPACE)
    deployment: str  # the operator Deployment, whose pod spec the local operator copies
    service_account: str

    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def ensure_namespace(plane: ControlPlane, name: str) -> None:
    if plane.get_or_none("namespace", name) is None:
        plane.kubectl("create", "namespace", name)


def install_with_kustomize(plane: ControlPlane) -> Installation:
    ensure_namespace(plane, AGENT_NAMESPACE)
    plane.kubectl("apply", "-k", str(REPO / "manifests"))
    plane.wait_established(CRD)
    return Installation(namespace="kaudit-system", deployment="kaudit", service_account="kaudit")


def operator_command(deployment: dict) -> tuple[list[str], dict[str, str]]:
    """The ``kaudit run`` arguments and plain env of the Deployment's operator container."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = [arg for arg in container["args"] if not arg.startswith(PORT_FLAGS)]
    assert args[0] == "run", f"the operator container runs {args!r}, not kaudit run"
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return args[1:] + [f"{flag}=0" for flag in PORT_FLAGS], env


def start_chart_operator(plane: ControlPlane, installation: Installation, *extra: str,
                         name: str = "operator") -> Process:
    deployment = plane.get("deployment", "-n", installation.namespace, installation.deployment)
    args, env = operator_command(deployment)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == installation.service_account
    kubeconfig = plane.kubeconfig_for_service_account(installation.namespace, installation.service_account)
    return plane.start_operator(*args, *extra, kubeconfig=kubeconfig, namespace=installation.namespace,
                                env=env, name=name)


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
