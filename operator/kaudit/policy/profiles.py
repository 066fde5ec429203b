"""The built-in profiles: ordinary audit rules, each with the comment that justifies it.

Every profile is written as the YAML/JSON a user would write and goes through the same decoder
and validator as user input, so a profile can never be a policy kube-apiserver refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

from kaudit.policy.catalog import READ_VERBS, SENSITIVE_RESOURCES, WRITE_VERBS
from kaudit.policy.document import PROFILES, SelfAudit
from kaudit.policy.model import PolicyRule


@dataclass(frozen=True)
class CommentedRule:
    comment: str  # why the rule exists; rendered above it in the policy file
    rule: PolicyRule


def _sensitive_resources() -> list[dict]:
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

_PROFILE_SOURCES: dict[str, tuple[tuple[str, dict], ...]] = {
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
}

OMIT_READ_ONLY_RULES: tuple[tuple[str, dict], ...] = (
    ("omitReadOnly: reads of secrets stay visible with metadata only; after a leak, who read which "
     "secret is the first question.",
     {"level": "Metadata", "verbs": list(READ_VERBS), "resources": [{"group": "", "resources": ["secrets"]}]}),
    ("omitReadOnly: no other get, list or watch request is logged.",
     {"level": "None", "verbs": list(READ_VERBS)}),
)


def _self_audit_sources(scope: SelfAudit) -> tuple[tuple[str, dict], ...]:
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


def _decode(sources: tuple[tuple[str, dict], ...]) -> tuple[CommentedRule, ...]:
    from kaudit.policy.loader import decode_rule

    return tuple(CommentedRule(comment, decode_rule(data, "", [])) for comment, data in sources)


def profile_rules(profile: str) -> tuple[CommentedRule, ...]:
    """The rules of ``profile`` (one of document.PROFILES), in order."""
    if profile not in PROFILES:
        raise KeyError(profile)
    return _decode(_PROFILE_SOURCES[profile])


def omit_read_only_rules() -> tuple[CommentedRule, ...]:
    return _decode(OMIT_READ_ONLY_RULES)
