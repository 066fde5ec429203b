"""The operator's RBAC (chart and manifests/) is least privilege, and covers what the operator does.

Two sources say what the operator needs:
- its permission table, ``kaudit.k8s.permissions.PERMISSIONS`` (the operator's own list of calls);
- what ``kaudit.render.render`` produces for every example: the operator server-side applies those
  objects (an apply that creates is authorised as ``create`` as well as ``patch``), and when it
  applies a Role it must already hold every permission that Role grants (Kubernetes refuses to let
  a subject grant more than it has, unless it holds ``escalate``, which kaudit does not get).
A granted permission neither source needs fails the test, and so does a needed one not granted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from helmtools import (  # noqa: F401  (helm, kubectl and k8s_tools are pytest fixtures)
    REPO,
    helm,
    helm_template,
    k8s_tools,
    kubectl,
    kustomize,
    objects_of_kind,
    write_values,
)
from kaudit.k8s import permissions
from kaudit.k8s.permissions import PERMISSIONS
from kaudit.render import render

OPERATOR_NAMESPACE = "kaudit-system"
AGENT_NAMESPACE = "datadog"  # the chart's default rbac.agentNamespaces and spec.agent.namespace's default
WORKLOAD_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
CLUSTER = None  # "namespace" of a cluster-wide request (cluster-scoped resource, or all namespaces)

# Verbs that let a subject gain more than it was given: kaudit needs none of them.
DANGEROUS_VERBS = {"escalate", "bind", "impersonate", "*"}
READ_VERBS = {"get", "list", "watch"}


@dataclass(frozen=True)
class Need:
    group: str
    resource: str
    verb: str
    namespace: str | None  # CLUSTER for a cluster-wide request
    why: str = field(compare=False, default="")


def plural(kind: str) -> str:
    return kind.lower() + "s"  # true of every kind kaudit renders (ConfigMap, DaemonSet, Role, Lease...)


def group_of(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


# --- what the operator needs -----------------------------------------------------------------


def example_renders() -> list:
    """render() of every example AuditCollection, with the existing agent objects they adapt."""
    existing = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "examples" / "existing").glob("*.yaml"))]
    results = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        collection = yaml.safe_load(path.read_text())
        results.append(render(collection, existing=existing, namespace=OPERATOR_NAMESPACE))
    return results


def needs_from_renders() -> set[Need]:
    needs: set[Need] = set()
    for rendered in example_renders():
        for obj in rendered.objects:
            group, resource = group_of(obj["apiVersion"]), plural(obj["kind"])
            namespace = obj["metadata"].get("namespace", CLUSTER)
            why = f"server-side apply of {obj['kind']} {obj['metadata']['name']}"
            needs.add(Need(group, resource, "patch", namespace, why))
            needs.add(Need(group, resource, "create", namespace, why + " (an apply that creates)"))
            if obj["kind"] == "Role":  # no escalation: hold what you grant
                for rule in obj["rules"]:
                    for granted_group in rule["apiGroups"]:
                        for granted in rule["resources"]:
                            for verb in rule["verbs"]:
                                needs.add(Need(granted_group, granted, verb, namespace,
                                               f"granted by the rendered Role {obj['metadata']['name']}"))
        for patch in rendered.patches:
            needs.add(Need(group_of(patch["apiVersion"]), plural(patch["kind"]), "patch",
                           patch["metadata"].get("namespace", CLUSTER), f"apply to the user's {patch['kind']}"))
    return needs


def needs_from_permission_table(agent_namespaces: tuple[str, ...] = (AGENT_NAMESPACE,)) -> set[Need]:
    """PERMISSIONS, placed in the namespaces its scopes name (the chart's values decide the agent
    namespaces; the operator namespace is the release namespace)."""
    places = {permissions.CLUSTER: (CLUSTER,), permissions.OPERATOR_NAMESPACE: (OPERATOR_NAMESPACE,),
              permissions.AGENT_NAMESPACES: agent_namespaces, permissions.KUBE_SYSTEM: ("kube-system",),
              permissions.EVENTS_NAMESPACE: ("default",)}
    return {Need(p.group, p.resource, verb, place, p.why)
            for p in PERMISSIONS for verb in p.verbs for place in places[p.scope]}


def all_needs() -> set[Need]:
    return needs_from_permission_table() | needs_from_renders()


# --- what the RBAC grants --------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    group: str
    resource: str
    verb: str
    namespace: str | None  # CLUSTER when granted by a ClusterRole through a ClusterRoleBinding
    role: str
    resource_names: tuple[str, ...] = ()  # () = every object of the resource


def binds(subject: dict, service_account: str, namespace: str = OPERATOR_NAMESPACE) -> bool:
    """Whether a binding's subject includes the ServiceAccount (by name, or a group it is in)."""
    if subject.get("kind") == "ServiceAccount":
        return (subject.get("name"), subject.get("namespace")) == (service_account, namespace)
    return subject.get("kind") == "Group" and subject.get("name") in (
        f"system:serviceaccounts:{namespace}", "system:serviceaccounts", "system:authenticated")


def operator_grants(objects: list[dict], service_account: str = "kaudit") -> set[Grant]:
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("ClusterRole", "Role")}
    grants: set[Grant] = set()
    for binding in objects:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if not any(binds(subject, service_account) for subject in binding["subjects"]):
            continue
        namespace = binding["metadata"].get("namespace", CLUSTER)
        ref = binding["roleRef"]
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        for rule in role["rules"]:
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule["verbs"]:
                        grants.add(Grant(group, resource, verb, namespace, f"{role['kind']}/{ref['name']}",
                                         tuple(rule.get("resourceNames", ()))))
    return grants


def allowed(grants: set[Grant], need: Need) -> bool:
    return any(g.group == need.group and g.resource == need.resource and g.verb == need.verb
               and (g.namespace is CLUSTER or g.namespace == need.namespace) for g in grants)


@pytest.fixture(scope="module")
def chart_objects(helm) -> list[dict]:
    return [o for o in helm_template(helm, include_crds=False) if o["kind"] in WORKLOAD_KINDS]


@pytest.fixture(scope="module")
def manifest_objects(kubectl) -> list[dict]:
    return [o for o in kustomize(kubectl) if o["kind"] in WORKLOAD_KINDS]


def rules_of(objects: list[dict]) -> list[tuple[str, dict]]:
    return [(f"{o['kind']}/{o['metadata']['name']}", rule) for o in objects if "rules" in o for rule in o["rules"]]


# --- the tests -------------------------------------------------------------------------------


def test_no_wildcards_no_dangerous_verbs_no_non_resource_urls(chart_objects):
    for role, rule in rules_of(chart_objects):
        for key in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(key, []), f"{role}: wildcard in {key}"
            assert not any("*" in value for value in rule.get(key, [])), f"{role}: wildcard in {key}"
        assert "nonResourceURLs" not in rule, role
        assert not DANGEROUS_VERBS & set(rule["verbs"]), f"{role}: {rule['verbs']}"


def test_secrets_are_never_granted(chart_objects):
    # kaudit reads no Secret: the managed agent references its API key Secret by name only.
    for role, rule in rules_of(chart_objects):
        assert "secrets" not in rule["resources"], role


def test_cluster_wide_grants_are_reads_or_kaudits_own_objects(chart_objects):
    # Writes cluster-wide: kaudit's own API, or named objects (its ClusterKopfPeering) only.
    for grant in operator_grants(chart_objects):
        if grant.namespace is CLUSTER and grant.verb not in {"list", "watch"}:
            assert grant.group == "kaudit.dev" or grant.resource_names, f"cluster-wide {grant.verb}: {grant}"


def test_every_needed_permission_is_granted(chart_objects):
    grants = operator_grants(chart_objects)
    missing = sorted(f"{n.verb} {n.group or 'core'}/{n.resource} in {n.namespace or 'the cluster'} ({n.why})"
                     for n in all_needs() if not allowed(grants, n))
    assert missing == []


def test_every_granted_permission_is_needed(chart_objects):
    needs = all_needs()
    unused = []
    for grant in operator_grants(chart_objects):
        if grant.namespace is CLUSTER:
            used = any(n.group == grant.group and n.resource == grant.resource and n.verb == grant.verb
                       and n.namespace is CLUSTER for n in needs)
        else:
            used = Need(grant.group, grant.resource, grant.verb, grant.namespace) in needs
        if not used:
            unused.append(f"{grant.role}: {grant.verb} {grant.group or 'core'}/{grant.resource}"
                          f" in {grant.namespace or 'the cluster'}")
    assert sorted(unused) == []


def test_chart_and_manifests_grant_the_same_rules(chart_objects, manifest_objects):
    def by_role(objects):
        return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o.get("rules")
                for o in objects if o["kind"] in ("ClusterRole", "Role")}
    assert by_role(manifest_objects) == by_role(chart_objects)
    assert operator_grants(manifest_objects) == operator_grants(chart_objects)


def test_agent_namespace_rules_follow_the_values(helm, tmp_path):
    values = write_values(tmp_path, {"rbac": {"agentNamespaces": ["monitoring"]}})
    objects = [o for o in helm_template(helm, "-f", str(values), include_crds=False) if o["kind"] in WORKLOAD_KINDS]
    namespaces = {g.namespace for g in operator_grants(objects) if g.verb == "patch" and g.resource == "datadogagents"}
    assert namespaces == {"monitoring"}  # writes move with the value; nothing stays behind in "datadog"


def test_mirror_pods_are_listed_through_a_role_in_kube_system_and_nothing_more(chart_objects):
    # restartRequired needs the kube-apiserver mirror pods (kube-system); a list there is all.
    in_kube_system = {g for g in operator_grants(chart_objects) if g.namespace == "kube-system"}
    assert {(g.group, g.resource, g.verb, g.role.split("/")[0]) for g in in_kube_system} == {("", "pods", "list", "Role")}
    assert not any(g.resource == "pods" and g.namespace is CLUSTER for g in operator_grants(chart_objects))


def test_every_scope_of_the_permission_table_is_known():
    assert {p.scope for p in PERMISSIONS} <= set(permissions.SCOPES)


def test_owner_references_with_block_owner_deletion_are_allowed(chart_objects, manifest_objects):
    # The OwnerReferencesPermissionEnforcement admission plugin (kubernetes
    # plugin/pkg/admission/gc) refuses an ownerReference with blockOwnerDeletion unless the subject
    # may "update" the owner's "finalizers" subresource.
    from kaudit.reconcile.plan import owner_reference

    owner = {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": "c", "uid": "u"}}
    assert owner_reference(owner)["blockOwnerDeletion"] is True
    need = Need("kaudit.dev", "auditcollections/finalizers", "update", CLUSTER)
    assert allowed(operator_grants(chart_objects), need)
    assert allowed(operator_grants(manifest_objects), need)


# --- who can change what reaches the nodes ----------------------------------------------------
# What ends up in the policy file on a control-plane node, and so in the audit trail, and each
# write that changes it: the AuditCollection (the operator renders from its spec) and its status
# (status.policy.fullHash approves what the installers install); the policy ConfigMap (refused by
# the installers unless approved, but its content is what they are offered); the installer
# DaemonSet, and any pod in the operator namespace (they run as root with the policy directory);
# the RBAC that decides all of the above.
WRITES = ("create", "update", "patch", "delete", "deletecollection")
REACHES_NODES = {
    ("kaudit.dev", "auditcollections", CLUSTER), ("kaudit.dev", "auditcollections/status", CLUSTER),
    ("", "configmaps", OPERATOR_NAMESPACE), ("apps", "daemonsets", OPERATOR_NAMESPACE),
    ("", "pods", OPERATOR_NAMESPACE), ("", "pods/exec", OPERATOR_NAMESPACE),
    ("rbac.authorization.k8s.io", "roles", OPERATOR_NAMESPACE),
    ("rbac.authorization.k8s.io", "rolebindings", OPERATOR_NAMESPACE),
    ("rbac.authorization.k8s.io", "clusterroles", CLUSTER),
    ("rbac.authorization.k8s.io", "clusterrolebindings", CLUSTER),
}
INSTALLER_SA = "kaudit-cluster-policy-installer"  # the examples' collection is "cluster"


def identities(objects: list[dict]) -> set[str]:
    """Every ServiceAccount kaudit's RBAC (chart and rendered objects) binds, by name."""
    return {s["name"] for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")
            for s in o["subjects"] if s.get("kind") == "ServiceAccount"} | {INSTALLER_SA, "default"}


def node_changing_writes(grants: set[Grant]) -> set[tuple[str, str, str]]:
    found = set()
    for grant in grants:
        if grant.verb not in WRITES and grant.verb not in DANGEROUS_VERBS:
            continue
        for group, resource, namespace in REACHES_NODES:
            if (grant.group, grant.resource) == (group, resource) and (grant.namespace is CLUSTER
                                                                     or grant.namespace == namespace):
                found.add((grant.verb, f"{group or 'core'}/{resource}", namespace or "the cluster"))
    return found


@pytest.fixture(scope="module")
def kaudit_rbac(chart_objects) -> list[dict]:
    """The chart's RBAC and the RBAC the operator renders (the installer's Role and RoleBinding)."""
    rendered = [o for r in example_renders() for o in r.objects if o["kind"] in WORKLOAD_KINDS]
    return chart_objects + [o for o in rendered if o["metadata"]["name"].startswith("kaudit-cluster-")]


def test_only_the_operator_can_change_what_reaches_the_nodes(kaudit_rbac):
    can_change = {name: node_changing_writes(operator_grants(kaudit_rbac, name)) for name in identities(kaudit_rbac)}
    assert {name for name, writes in can_change.items() if writes} == {"kaudit"}
    # The approval is the operator's alone: it writes status.policy, nothing else of kaudit's can.
    assert ("patch", "kaudit.dev/auditcollections/status", "the cluster") in can_change["kaudit"]
    # And it cannot hand out rights it does not hold: no cluster RBAC write, no bind or escalate.
    assert not any(resource.startswith("rbac.authorization.k8s.io/cluster") or verb in DANGEROUS_VERBS
                   for verb, resource, _ in can_change["kaudit"])


def test_the_installer_holds_exactly_its_permission_table(kaudit_rbac):
    places = {permissions.CLUSTER: CLUSTER, permissions.OPERATOR_NAMESPACE: OPERATOR_NAMESPACE}
    table = {(p.group, p.resource, verb, places[p.scope]) for p in permissions.INSTALLER_PERMISSIONS for verb in p.verbs}
    held = {(g.group, g.resource, g.verb, g.namespace) for g in operator_grants(kaudit_rbac, INSTALLER_SA)}
    assert held == table


def test_the_approval_read_is_a_get_for_the_operator_namespace_only(chart_objects):
    [binding] = [o for o in chart_objects if o["kind"] == "ClusterRoleBinding" and o["metadata"]["name"].endswith("-policy-approval")]
    assert binding["subjects"] == [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                                    "name": f"system:serviceaccounts:{OPERATOR_NAMESPACE}"}]
    # Any other account of the namespace gets this read and nothing else from kaudit's RBAC.
    assert {(g.group, g.resource, g.verb) for g in operator_grants(chart_objects, "default")} == {
        ("kaudit.dev", "auditcollections", "get")}
