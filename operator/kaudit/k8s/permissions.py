"""Every Kubernetes permission the operator (``kaudit run``) needs, and where it needs it.

The RBAC of the Helm chart (and manifests/, generated from it) is written from this table;
INSTALLER_PERMISSIONS (at the end) is the policy installer's.
tests/test_rbac_least_privilege.py checks that the chart grants each entry in its scope and
nothing else; the operator scenarios (tests/test_operator_scenarios.py) check that every request
the running operator sends is covered by an entry here.

Scopes — where the requests go, so which Role or ClusterRole must grant them:

* ``cluster``: cluster-scoped resources, and requests across all namespaces (a ClusterRole);
* ``operator-namespace``: the operator's own namespace, POD_NAMESPACE (a Role there);
* ``agent-namespaces``: the namespaces spec.agent.namespace may name (a Role in each, the chart's
  ``rbac.agentNamespaces``);
* ``kube-system``: where kubeadm runs kube-apiserver's mirror pods (a Role there);
* ``events-namespace``: ``default``, the only namespace where the API server accepts an Event about
  a cluster-scoped object such as an AuditCollection (a Role there).

Server-side apply is a PATCH; when the object does not exist yet the API server also requires
``create``, so every kind kaudit owns and applies carries both.
"""

from __future__ import annotations

from typing import NamedTuple

CLUSTER = "cluster"
OPERATOR_NAMESPACE = "operator-namespace"
AGENT_NAMESPACES = "agent-namespaces"
KUBE_SYSTEM = "kube-system"
EVENTS_NAMESPACE = "events-namespace"
SCOPES = (CLUSTER, OPERATOR_NAMESPACE, AGENT_NAMESPACES, KUBE_SYSTEM, EVENTS_NAMESPACE)
# Where the operator's Role for its mirror-pod reads lives.
APISERVER_NAMESPACE = "kube-system"
# Where Events about the cluster-scoped AuditCollection go (see kaudit.k8s.events).
CLUSTER_SCOPED_EVENTS_NAMESPACE = "default"


class Permission(NamedTuple):
    group: str  # "" is the core API group
    resource: str
    verbs: tuple[str, ...]
    scope: str  # one of SCOPES
    why: str


OWNED_WRITE = ("create", "patch", "delete")  # server-side apply (create or patch) and pruning

PERMISSIONS: tuple[Permission, ...] = (
    # --- cluster-wide --------------------------------------------------------------------------
    Permission("kaudit.dev", "auditcollections", ("get", "list", "watch", "patch"), CLUSTER,
               "kopf lists and watches the AuditCollections and patches its finalizer and bookkeeping"
               " annotation; get confirms which collection is active before answering Conflict"),
    Permission("kaudit.dev", "auditcollections/status", ("patch",), CLUSTER,
               "report conditions, the policy hash, the agent rollout and the node reports"),
    Permission("kaudit.dev", "auditcollections/finalizers", ("update",), CLUSTER,
               "never called: owner references with blockOwnerDeletion are allowed by the"
               " OwnerReferencesPermissionEnforcement admission plugin only to a subject that may"
               " update the owner's finalizers"),
    Permission("", "configmaps", ("list", "watch"), CLUSTER,
               "the policy and agent-config ConfigMaps, listed and watched by label kaudit.dev/collection"
               " across namespaces (drift); RBAC cannot restrict by label"),
    Permission("", "serviceaccounts", ("list", "watch"), CLUSTER,
               "the Managed agent's and the installer's ServiceAccounts, by label (drift)"),
    Permission("apps", "daemonsets", ("list", "watch"), CLUSTER,
               "the agent and installer DaemonSets and the user's patched DaemonSet, by label (drift)"),
    Permission("datadoghq.com", "datadogagents", ("list", "watch"), CLUSTER,
               "the user's patched DatadogAgent, by label (drift)"),
    Permission("", "nodes", ("list",), CLUSTER,
               "count control-plane nodes and check the agent tolerates their taints"),
    Permission("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"), CLUSTER,
               "kopf discovers whether the DatadogAgent CRD is installed"),
    Permission("kopf.dev", "clusterkopfpeerings", ("get", "list", "watch", "patch"), CLUSTER,
               "kopf peering between replicas (crds/kopf-peering.yaml); not needed with --standalone;"
               " get and patch only on kaudit's own peering object"),
    # --- the operator's namespace --------------------------------------------------------------
    Permission("", "configmaps", OWNED_WRITE, OPERATOR_NAMESPACE, "the policy ConfigMap: applied, pruned"),
    Permission("", "serviceaccounts", OWNED_WRITE, OPERATOR_NAMESPACE, "the policy installer's ServiceAccount"),
    Permission("apps", "daemonsets", OWNED_WRITE, OPERATOR_NAMESPACE, "the policy installer's DaemonSet"),
    Permission("rbac.authorization.k8s.io", "roles", ("list", "watch", *OWNED_WRITE), OPERATOR_NAMESPACE,
               "the policy installer's Role; listed and watched by label in this namespace only (drift)"),
    Permission("rbac.authorization.k8s.io", "rolebindings", ("list", "watch", *OWNED_WRITE), OPERATOR_NAMESPACE,
               "the policy installer's RoleBinding; listed and watched by label like its Role"),
    Permission("coordination.k8s.io", "leases", ("list", "watch"), OPERATOR_NAMESPACE,
               "read the policy installers' node reports (Leases labelled kaudit.dev/collection);"
               " watched in this namespace only, so a new report updates status at once"),
    Permission("coordination.k8s.io", "leases", ("create", "patch"), OPERATOR_NAMESPACE,
               "never called by the operator: Kubernetes lets it create the installer's Role only if it"
               " holds every permission that Role grants (no privilege escalation)"),
    Permission("", "events", ("create",), OPERATOR_NAMESPACE,
               "kopf's own Events about an AuditCollection (handler failures and retries): kopf posts"
               " those of a cluster-scoped object in the namespace of its credentials, the pod's"),
    # --- the agent namespaces ------------------------------------------------------------------
    Permission("", "configmaps", OWNED_WRITE, AGENT_NAMESPACES, "the agent log-config ConfigMap"),
    Permission("", "serviceaccounts", OWNED_WRITE, AGENT_NAMESPACES, "the Managed agent's ServiceAccount"),
    Permission("apps", "daemonsets", ("get", *OWNED_WRITE), AGENT_NAMESPACES,
               "the Managed agent DaemonSet (owned); DaemonSet mode: get the user's DaemonSet, apply only"
               " kaudit's fields to it and remove them on delete"),
    Permission("datadoghq.com", "datadogagents", ("get", "patch"), AGENT_NAMESPACES,
               "DatadogAgent mode: read the user's DatadogAgent, apply kaudit's fields, remove them on"
               " delete; never create or delete one"),
    Permission("", "pods", ("list",), AGENT_NAMESPACES,
               "ready agent pods on control-plane nodes (by the agent DaemonSet's selector)"),
    # --- default ---------------------------------------------------------------------------------
    Permission("", "events", ("create",), EVENTS_NAMESPACE,
               "Events about changes and refusals; the API server accepts an Event about a"
               " cluster-scoped object (the AuditCollection) only in namespace default"),
    # --- kube-system ---------------------------------------------------------------------------
    Permission("", "pods", ("list",), KUBE_SYSTEM,
               "kube-apiserver mirror pods (component=kube-apiserver): did each start after the policy"
               " was installed (restartRequired)? Without it restartRequired is \"unknown\""),
)


# The policy installer's ServiceAccount (kaudit-<name>-policy-installer, rendered per collection):
# its Role (kaudit.render.installer) grants the Leases; the chart's ClusterRole <release>-policy-approval,
# bound to the group of the operator namespace's service accounts, grants the read of AuditCollections.
# tests/test_rbac_least_privilege.py checks that the installer holds exactly these.
INSTALLER_PERMISSIONS: tuple[Permission, ...] = (
    Permission("coordination.k8s.io", "leases", ("create", "patch"), OPERATOR_NAMESPACE,
               "its node report: server-side apply of one Lease (create the first time, then patch)"),
    Permission("kaudit.dev", "auditcollections", ("get",), CLUSTER,
               "before writing a policy, read the AuditCollection's status.policy.fullHash: only the"
               " approved policy is installed (kaudit.installer.approval)"),
)


def scope_of_namespace(namespace: str | None, operator_namespace: str) -> str:
    """The scope a request in ``namespace`` (None: cluster-wide) falls in."""
    if namespace is None:
        return CLUSTER
    if namespace == operator_namespace:
        return OPERATOR_NAMESPACE
    if namespace == APISERVER_NAMESPACE:
        return KUBE_SYSTEM
    if namespace == CLUSTER_SCOPED_EVENTS_NAMESPACE:
        return EVENTS_NAMESPACE
    return AGENT_NAMESPACES


def covers(group: str, resource: str, verb: str, scope: str) -> bool:
    """Whether PERMISSIONS allows ``verb`` on ``resource`` in ``scope`` (cluster-wide covers all)."""
    return any(p.group == group and p.resource == resource and verb in p.verbs and p.scope in (scope, CLUSTER)
               for p in PERMISSIONS)
