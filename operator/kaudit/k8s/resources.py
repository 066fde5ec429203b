"""The Kubernetes resources kaudit reads or writes, and how their URLs are built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

# The server-side apply field manager of every write kaudit makes (operator and node installer);
# managedFields entries under it are what kaudit owns.
FIELD_MANAGER = "kaudit"


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core API
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path; without ``namespace`` a namespaced resource is addressed cluster-wide (lists)."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [root]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name:
            parts.append(quote(name, safe=""))
            if subresource:
                parts.append(subresource)
        return "/".join(parts)


AUDIT_COLLECTIONS = Resource("kaudit.dev", "v1alpha1", "auditcollections", "AuditCollection", namespaced=False)
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap", namespaced=True)
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount", namespaced=True)
DAEMON_SETS = Resource("apps", "v1", "daemonsets", "DaemonSet", namespaced=True)
DATADOG_AGENTS = Resource("datadoghq.com", "v2alpha1", "datadogagents", "DatadogAgent", namespaced=True)
ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", namespaced=True)
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", namespaced=True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
PODS = Resource("", "v1", "pods", "Pod", namespaced=True)
EVENTS = Resource("", "v1", "events", "Event", namespaced=True)
# kopf's peering object (crds/kopf-peering.yaml): read to tell whether this replica is the active one.
PEERINGS = Resource("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False)

# What kaudit renders or patches anywhere in the cluster: watched by label (drift) and pruned.
CHILD_RESOURCES = (CONFIG_MAPS, SERVICE_ACCOUNTS, DAEMON_SETS, DATADOG_AGENTS)
# What kaudit renders only in its own namespace (the installer's RBAC): listed and watched in that
# namespace alone (not by kopf, whose watches are cluster-wide), so the operator needs no
# cluster-wide read of Roles; pruned like the other children.
OPERATOR_NAMESPACE_CHILDREN = (ROLES, ROLE_BINDINGS)
# What the policy installer writes (one Lease per node, in the operator's namespace): read and
# watched in that namespace only (a kopf watch is cluster-wide and would need more RBAC), never written.
REPORT_RESOURCES = (LEASES,)

_BY_KIND = {
    (r.api_version, r.kind): r
    for r in (AUDIT_COLLECTIONS, NODES, PODS, EVENTS, *CHILD_RESOURCES, *OPERATOR_NAMESPACE_CHILDREN,
              *REPORT_RESOURCES)
}


def resource_of(body: dict[str, Any]) -> Resource:
    """The resource of an object body (by apiVersion and kind); only kinds kaudit knows."""
    key = (body.get("apiVersion", ""), body.get("kind", ""))
    try:
        return _BY_KIND[key]
    except KeyError:
        raise ValueError(f"kaudit does not handle {key[0]} {key[1]}") from None


def identity(body: dict[str, Any]) -> tuple[str, str, str | None, str]:
    """(apiVersion, kind, namespace, name): what names one object in the cluster."""
    meta = body.get("metadata") or {}
    return body.get("apiVersion", ""), body.get("kind", ""), meta.get("namespace"), meta.get("name", "")
