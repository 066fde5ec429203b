"""The built-in profiles: ordinary audit rules, each with the comment that justifies it.

Every profile is written as the YAML/JSON a user would write and goes through the same decoder
and validator as user input, so a profile can never be a policy kube-apiserver refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kaudit.policy.catalog import READ_VERBS, SENSITIVE_RESOURCES, WRITE_VERBS
from kaudit.policy.document import PROFILES, SelfAudit
from kaudit.policy.loader import decode_rule
from kaudit.policy.model import PolicyRule


@dataclass(frozen=True)
class CommentedRule:
    comment: str  # why the rule exists; rendered above it in the policy file
    rule: PolicyRule


def _sensitive_resources() -> list[dict[str, Any]]:
    by_group: dict[str, list[str]] = {}
    for group, resource in SENSITIVE_RESOURCES:
        by_group.setdefault(group, []).append(resource)
    return [{"group": group, "resources": names} for group, names in by_group.items()]


_HEALTH = (
    "Health probes, version checks and metrics scrapes arrive every few seconds from load balancers, "
    "kubelets and monitoring; they record nothing about who changed what.",
    {"level": "None", "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*", "/version*", "/metrics"]},
)
_EVENTS = (
    "Event objects are already a record of cluster activity, written constantly by every controller; "
    "auditing them multiplies volume without adding accountability.",
    {"level": "None", "resources": [{"group": "", "resources": ["events"]}, {"group": "events.k8s.io", "resources": ["events"]}]},
)
_NODE_HEARTBEATS = (
    "Kubelet heartbeats: every node reads and patches its own Node status every few seconds.",
    {"level": "None", "userGroups": ["system:nodes"], "verbs": ["get", "update", "patch"],
     "resources": [{"group": "", "resources": ["nodes", "nodes/status"]}]},
)
_LEASES = (
    "Lease renewals: node heartbeat Leases and every controller's leader-election Lease are read and "
    "renewed every few seconds. Creating, patching or deleting a Lease is still logged.",
    {"level": "None", "verbs": ["get", "update"], "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}]},
)
_SENSITIVE = (
    "Sensitive resources (secrets, configmaps, service-account tokens, token reviews): their bodies can "
    "hold credentials, so every request to them is logged with metadata only, before any rule that "
    "logs bodies and before the noise filters below, so reads of secrets stay visible.",
    {"level": "Metadata", "resources": _sensitive_resources()},
)
_CONTROL_PLANE_READS = (
    "Control-plane components read and watch the objects they manage all the time; those reads are "
    "routine. Their writes are still logged below.",
    {"level": "None", "users": ["system:kube-controller-manager", "system:kube-scheduler",
                                "system:cloud-controller-manager", "system:kube-proxy"],
     "verbs": list(READ_VERBS)},
)
_CONTROLLER_SA_READS = (
    "With --use-service-account-credentials (kubeadm's default) each built-in controller acts as its own "
    "service account in kube-system; its reads are just as routine. Writes are still logged below.",
    {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"], "verbs": list(READ_VERBS)},
)
_NOISE = (_HEALTH, _EVENTS, _NODE_HEARTBEATS, _LEASES)

# EKS's policy (profile EKS): kubernetes' GCE reference policy (cluster/gce/gci/configure-helper.sh,
# create-master-audit-policy, as of its audit.k8s.io/v1 version) plus the aws-auth rule that the
# EKS best-practices guide (detective controls) says EKS adds. Rule for rule and field for field as
# upstream writes them; the comments are kaudit's.
_EKS_KNOWN_GROUPS = [{"group": group} for group in (
    "", "admissionregistration.k8s.io", "apiextensions.k8s.io", "apiregistration.k8s.io", "apps",
    "authentication.k8s.io", "authorization.k8s.io", "autoscaling", "batch", "certificates.k8s.io", "extensions",
    "metrics.k8s.io", "networking.k8s.io", "node.k8s.io", "policy", "rbac.authorization.k8s.io",
    "scheduling.k8s.io", "storage.k8s.io")]
_NO_RECEIVED = {"omitStages": ["RequestReceived"]}
_EKS = (
    ("EKS: changes to the aws-auth ConfigMap (which IAM identities are which Kubernetes users and groups) "
     "with request and response bodies. Placed first: kube-apiserver takes the first matching rule, and "
     "the reference policy's ConfigMap rule below would otherwise log them at Metadata.",
     {"level": "RequestResponse", "namespaces": ["kube-system"], "verbs": ["update", "patch", "delete"],
      "resources": [{"group": "", "resources": ["configmaps"], "resourceNames": ["aws-auth"]}], **_NO_RECEIVED}),
    ("Reference policy: kube-proxy's watches of endpoints and services, constant and low-risk.",
     {"level": "None", "users": ["system:kube-proxy"], "verbs": ["watch"],
      "resources": [{"group": "", "resources": ["endpoints", "services", "services/status"]}]}),
    ("Reference policy: the ingress controller's reads of its ConfigMap in kube-system (as system:unsecured).",
     {"level": "None", "users": ["system:unsecured"], "namespaces": ["kube-system"], "verbs": ["get"],
      "resources": [{"group": "", "resources": ["configmaps"]}]}),
    ("Reference policy: node reads by the legacy kubelet identity.",
     {"level": "None", "users": ["kubelet"], "verbs": ["get"],
      "resources": [{"group": "", "resources": ["nodes", "nodes/status"]}]}),
    ("Reference policy: node reads by kubelets (group system:nodes).",
     {"level": "None", "userGroups": ["system:nodes"], "verbs": ["get"],
      "resources": [{"group": "", "resources": ["nodes", "nodes/status"]}]}),
    ("Reference policy: the control plane's reads and renewals of its Endpoints in kube-system.",
     {"level": "None", "users": ["system:kube-controller-manager", "system:cloud-controller-manager",
                                 "system:kube-scheduler", "system:serviceaccount:kube-system:endpoint-controller"],
      "verbs": ["get", "update"], "namespaces": ["kube-system"],
      "resources": [{"group": "", "resources": ["endpoints"]}]}),
    ("Reference policy: kube-apiserver's own namespace reads.",
     {"level": "None", "users": ["system:apiserver"], "verbs": ["get"],
      "resources": [{"group": "", "resources": ["namespaces", "namespaces/status", "namespaces/finalize"]}]}),
    ("Reference policy: the cluster autoscaler's status ConfigMap and Endpoints in kube-system.",
     {"level": "None", "users": ["cluster-autoscaler"], "verbs": ["get", "update"], "namespaces": ["kube-system"],
      "resources": [{"group": "", "resources": ["configmaps", "endpoints"]}]}),
    ("Reference policy: the controllers' metrics reads for autoscaling.",
     {"level": "None", "users": ["system:kube-controller-manager", "system:cloud-controller-manager"],
      "verbs": ["get", "list"], "resources": [{"group": "metrics.k8s.io"}]}),
    ("Reference policy: health, version and swagger URLs.",
     {"level": "None", "nonResourceURLs": ["/healthz*", "/version", "/swagger*"]}),
    ("Reference policy: core Events (written constantly; left out for performance). events.k8s.io is "
     "not among the known groups below, so its Events fall to the last rule, at Metadata.",
     {"level": "None", "resources": [{"group": "", "resources": ["events"]}]}),
    ("Reference policy: status updates from kubelets and the node problem detector, request body only "
     "(frequent and large responses).",
     {"level": "Request", "users": ["kubelet", "system:node-problem-detector",
                                    "system:serviceaccount:kube-system:node-problem-detector"],
      "verbs": ["update", "patch"], "resources": [{"group": "", "resources": ["nodes/status", "pods/status"]}],
      **_NO_RECEIVED}),
    ("Reference policy: the same status updates from group system:nodes.",
     {"level": "Request", "userGroups": ["system:nodes"], "verbs": ["update", "patch"],
      "resources": [{"group": "", "resources": ["nodes/status", "pods/status"]}], **_NO_RECEIVED}),
    ("Reference policy: the namespace controller's deletecollection calls, request only (large responses).",
     {"level": "Request", "users": ["system:serviceaccount:kube-system:namespace-controller"],
      "verbs": ["deletecollection"], **_NO_RECEIVED}),
    ("Reference policy: Secrets, ConfigMaps, service-account tokens and token reviews at Metadata only: "
     "their bodies can hold credentials.",
     {"level": "Metadata", "resources": [{"group": "", "resources": ["secrets", "configmaps", "serviceaccounts/token"]},
                                         {"group": "authentication.k8s.io", "resources": ["tokenreviews"]}],
      **_NO_RECEIVED}),
    ("Reference policy: reads of the known API groups with the request only (read responses can be large).",
     {"level": "Request", "verbs": list(READ_VERBS), "resources": _EKS_KNOWN_GROUPS, **_NO_RECEIVED}),
    ("Reference policy: every other request to the known API groups with request and response bodies.",
     {"level": "RequestResponse", "resources": _EKS_KNOWN_GROUPS, **_NO_RECEIVED}),
    ("Reference policy: everything else (custom resources, other non-resource URLs) at Metadata.",
     {"level": "Metadata", **_NO_RECEIVED}),
)

_PROFILE_SOURCES: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "Default": _NOISE + (
        _SENSITIVE,
        _CONTROL_PLANE_READS,
        _CONTROLLER_SA_READS,
        ("Writes are logged with their request body: it shows exactly what the caller asked for. The "
         "response body is left out because it mostly repeats the request and doubles the volume.",
         {"level": "Request", "verbs": list(WRITE_VERBS)}),
        ("Catch-all: everything else (reads, discovery, other non-resource requests) is logged with "
         "metadata only. Without it unmatched requests would silently not be logged.",
         {"level": "Metadata"}),
    ),
    "Datadog": (
        ("Datadog integration page: do not log health, logs, metrics, swagger and version URLs.",
         {"level": "None", "nonResourceURLs": ["/healthz*", "/logs", "/metrics", "/swagger*", "/version"]}),
        ("Datadog integration page: token reviews at Metadata so the token is not logged.",
         {"level": "Metadata", "omitStages": ["RequestReceived"],
          "resources": [{"group": "authentication.k8s.io", "resources": ["tokenreviews"]}]}),
        ("Datadog integration page: full detail for subject access reviews (auth delegation).",
         {"level": "RequestResponse", "omitStages": ["RequestReceived"],
          "resources": [{"group": "authorization.k8s.io", "resources": ["subjectaccessreviews"]}]}),
        ("Datadog integration page: pod changes at RequestResponse. The page nests 'verbs' inside the "
         "resources entry, where kube-apiserver drops it (and then logs every pod read in full); here "
         "'verbs' is on the rule, as the page's comment intends.",
         {"level": "RequestResponse", "omitStages": ["RequestReceived"], "verbs": ["create", "patch", "update", "delete"],
          "resources": [{"group": "", "resources": ["pods"]}]}),
        ("Datadog integration page: everything else at Metadata.",
         {"level": "Metadata", "omitStages": ["RequestReceived"]}),
    ),
    "WriteRequestBodies": _NOISE + (
        _SENSITIVE,
        ("Writes are logged with request and response bodies.",
         {"level": "RequestResponse", "verbs": list(WRITE_VERBS)}),
        ("Catch-all: reads and everything else with metadata only.", {"level": "Metadata"}),
    ),
    "AllRequestBodies": _NOISE + (
        _SENSITIVE,
        ("Catch-all: every other request, reads included, with request and response bodies.",
         {"level": "RequestResponse"}),
    ),
    "None": (
        ("Log nothing (beyond kaudit's self-audit rules, when they are above). kube-apiserver refuses a "
         "policy without rules, so 'nothing' is one rule.",
         {"level": "None"}),
    ),
    "EKS": _EKS,
}

OMIT_READ_ONLY_RULES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("omitReadOnly: reads of secrets stay visible with metadata only; after a leak, who read which "
     "secret is the first question.",
     {"level": "Metadata", "verbs": list(READ_VERBS), "resources": [{"group": "", "resources": ["secrets"]}]}),
    ("omitReadOnly: no other get, list or watch request is logged.",
     {"level": "None", "verbs": list(READ_VERBS)}),
)


def _self_audit_sources(scope: SelfAudit) -> tuple[tuple[str, dict[str, Any]], ...]:
    """The rules that record changes to the audit machinery itself, first in every policy.

    Lowering the policy must itself be in the log, with what was put in: kube-apiserver takes the
    first matching rule, so these come before the user's rules and every profile rule. None of
    them matches Secrets, and tokens are logged at Metadata only (the response is a live token).
    """
    writes = list(WRITE_VERBS)
    return (
        ("kaudit audits itself (spec.policy.auditKaudit): changes to AuditCollections (the spec and the "
         "status that approves each policy), to their CRD, and to cluster-wide RBAC (who may change them) "
         "are logged with request and response bodies, so lowering the policy is in the log with what "
         "was put in.",
         {"level": "RequestResponse", "verbs": writes, "resources": [
             {"group": "kaudit.dev", "resources": ["auditcollections/*"]},  # and its status: the approval
             {"group": "apiextensions.k8s.io", "resources": ["customresourcedefinitions"],
              "resourceNames": ["auditcollections.kaudit.dev"]},
             {"group": "rbac.authorization.k8s.io", "resources": ["clusterroles", "clusterrolebindings"]},
         ]}),
        (f"kaudit audits itself: in its namespace {scope.namespace}, changes to the policy ConfigMap the "
         "installers read (named: it holds the policy and nothing else), and to what runs there as "
         "kaudit or decides who kaudit is (pods, ServiceAccounts, DaemonSets, Deployments, Roles, "
         "RoleBindings), with bodies. A ConfigMap being created has no name yet when kube-apiserver picks "
         "the rule, so its creation falls to the rules below, which log no ConfigMap body.",
         {"level": "RequestResponse", "verbs": writes, "namespaces": [scope.namespace], "resources": [
             {"group": "", "resources": ["configmaps"], "resourceNames": [scope.policy_config_map]},
             {"group": "", "resources": ["pods", "serviceaccounts"]},
             {"group": "apps", "resources": ["daemonsets", "deployments"]},
             {"group": "rbac.authorization.k8s.io", "resources": ["roles", "rolebindings"]},
         ]}),
        (f"kaudit audits itself: sessions into the pods of {scope.namespace} and tokens for its "
         "ServiceAccounts (how someone borrows kaudit's identity), with metadata only: a TokenRequest "
         "response is a live token.",
         {"level": "Metadata", "verbs": ["create", "get"], "namespaces": [scope.namespace], "resources": [
             {"group": "", "resources": ["pods/exec", "pods/attach", "pods/portforward", "serviceaccounts/token"]},
         ]}),
    )


def self_audit_rules(scope: SelfAudit) -> tuple[CommentedRule, ...]:
    return _decode(_self_audit_sources(scope))


def _decode(sources: tuple[tuple[str, dict[str, Any]], ...]) -> tuple[CommentedRule, ...]:
    return tuple(CommentedRule(comment, decode_rule(data, "", [])) for comment, data in sources)


def profile_rules(profile: str) -> tuple[CommentedRule, ...]:
    """The rules of ``profile`` (one of document.PROFILES), in order."""
    if profile not in PROFILES:
        raise KeyError(profile)
    return _decode(_PROFILE_SOURCES[profile])


def omit_read_only_rules() -> tuple[CommentedRule, ...]:
    return _decode(OMIT_READ_ONLY_RULES)
