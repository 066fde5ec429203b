"""Every Kubernetes permission the operator (``kaudit run``) needs, derived from its API calls.

The RBAC manifests and the Helm chart are written from this table; tests check that every call in
``kaudit.k8s`` is covered. Scope ``cluster`` needs a ClusterRole; ``namespace`` means the
operator's own namespace (POD_NAMESPACE) is enough (a Role).
"""

from __future__ import annotations

from typing import NamedTuple


class Permission(NamedTuple):
    group: str  # "" is the core API group
    resource: str
    verbs: tuple[str, ...]
    scope: str  # "cluster" or "namespace"
    why: str


PERMISSIONS: tuple[Permission, ...] = (
    Permission("kaudit.dev", "auditcollections", ("get", "list", "watch", "patch"), "cluster",
               "watch the AuditCollections; kopf's finalizer and bookkeeping annotation"),
    Permission("kaudit.dev", "auditcollections/status", ("get", "patch"), "cluster",
               "report conditions, the policy hash and the agent rollout"),
    Permission("", "configmaps", ("get", "list", "watch", "patch", "delete"), "cluster",
               "server-side apply the policy and agent-config ConfigMaps; watch them by label for drift;"
               " prune the ones a spec change leaves behind"),
    Permission("", "serviceaccounts", ("get", "list", "watch", "patch", "delete"), "cluster",
               "the Managed agent's and the policy installer's ServiceAccounts"),
    Permission("apps", "daemonsets", ("get", "list", "watch", "patch", "delete"), "cluster",
               "the Managed agent and installer DaemonSets (owned); the user's agent DaemonSet"
               " (DaemonSet mode: only kaudit's fields are applied, released on delete)"),
    Permission("datadoghq.com", "datadogagents", ("get", "list", "watch", "patch"), "cluster",
               "DatadogAgent mode: apply kaudit's fields to the user's DatadogAgent, released on delete"),
    Permission("rbac.authorization.k8s.io", "roles", ("get", "list", "patch", "delete"), "namespace",
               "the policy installer's Role in the operator's namespace"),
    Permission("rbac.authorization.k8s.io", "rolebindings", ("get", "list", "patch", "delete"), "namespace",
               "the policy installer's RoleBinding in the operator's namespace"),
    Permission("coordination.k8s.io", "leases", ("create", "patch"), "namespace",
               "not called by the operator: Kubernetes lets it create the installer's Role only if it"
               " holds the permissions that Role grants (no privilege escalation)"),
    Permission("coordination.k8s.io", "leases", ("list",), "namespace",
               "read the policy installer's node reports (Leases labelled kaudit.dev/collection)"),
    Permission("", "nodes", ("list",), "cluster",
               "count control-plane nodes and check the agent tolerates their taints"),
    Permission("", "pods", ("list",), "cluster",
               "count ready agent pods on control-plane nodes (agent namespace); list the kube-apiserver"
               " mirror pods in kube-system (component=kube-apiserver) to tell whether a restart is still"
               " required; without it restartRequired is \"unknown\""),
    Permission("", "events", ("create",), "namespace",
               "Events about changes and refusals, posted in the operator's namespace"),
    Permission("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"), "cluster",
               "kopf discovers whether the DatadogAgent CRD is installed"),
    Permission("kopf.dev", "clusterkopfpeerings", ("get", "list", "watch", "patch"), "cluster",
               "kopf peering between replicas (crds/kopf-peering.yaml); not needed with --standalone"),
)
