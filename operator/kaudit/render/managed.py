"""Managed mode: kaudit's own Datadog Agent DaemonSet on the control-plane nodes.

The pod runs as root because kube-apiserver writes the audit log as a root-owned 0600 file; root
reads a file it owns through the owner bits, so every capability is dropped (no DAC_OVERRIDE), and
the root filesystem is read-only. What the agent must write gets its own volume, as in the Datadog
Helm chart: its configuration directory (seeded from the image by an init container), its own
logs, /tmp, its socket directory and the pointdir, where it keeps its read offsets.
"""

from __future__ import annotations

from typing import Any

from kaudit.api.spec import AuditCollection
from kaudit.errors import FieldError
from kaudit.render.common import (
    AGENT_CONFD_DIR,
    AGENT_CONFIG_KEY,
    CONFIG_HASH_ANNOTATION,
    CONTROL_PLANE_ROLE_LABELS,
    CONTROL_PLANE_TOLERATIONS,
    POINTDIR,
    labels,
    metadata,
    missing_control_plane_tolerations,
    object_name,
    selector_labels,
)

COMPONENT = "agent"
CONTAINER = "agent"
# Host directory behind the pointdir: kaudit's own, so that the offsets never mix with those of
# another agent on the same node (the Helm chart keeps its own under /var/lib/datadog-agent/logs).
POINTDIR_HOST_PATH = "/var/lib/kaudit/agent-run"
HEALTH_PORT = 5555
DEFAULT_RESOURCES = {
    "limits": {"memory": "512Mi"},
    "requests": {"cpu": "100m", "memory": "256Mi"},
}
_CONFIG_SEED_MOUNT = "/kaudit-agent-config"


def managed_objects(collection: AuditCollection, config_map_name: str, config_hash: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The agent's ServiceAccount and its DaemonSet, in apply order."""
    name = object_name(collection.name, COMPONENT)
    namespace = collection.agent.namespace
    service_account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(name, namespace, collection.name, COMPONENT),
        # The agent only tails a file: it needs no Kubernetes API access at all.
        "automountServiceAccountToken": False,
    }
    return service_account, _daemon_set(collection, name, config_map_name, config_hash)


def managed_warnings(collection: AuditCollection) -> list[FieldError]:
    tolerations = collection.agent.managed.tolerations
    if tolerations is None:
        return []
    missing = missing_control_plane_tolerations(tolerations)
    return [
        FieldError(
            "spec.agent.managed.tolerations",
            f"no toleration for the taint {t['key']}:{t['effect']}; the agent will not run on "
            f"control-plane nodes that carry it, and only they have the audit log",
        )
        for t in missing
    ]


def _daemon_set(collection: AuditCollection, name: str, config_map_name: str, config_hash: str) -> dict[str, Any]:
    managed = collection.agent.managed
    pod_spec: dict[str, Any] = {
        "serviceAccountName": name,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "tolerations": [dict(t) for t in (managed.tolerations or CONTROL_PLANE_TOLERATIONS)],
        "initContainers": [_seed_container(managed.image)],
        "containers": [_agent_container(collection)],
        "volumes": _volumes(collection, config_map_name),
    }
    if managed.node_selector:
        pod_spec["nodeSelector"] = dict(managed.node_selector)
    else:
        # Either role label marks a control-plane node (the legacy "master" one on older clusters);
        # node selector terms are ORed, a nodeSelector map could only AND them.
        pod_spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": label, "operator": "Exists"}]}
                        for label in CONTROL_PLANE_ROLE_LABELS
                    ]
                }
            }
        }
    if managed.priority_class_name:
        pod_spec["priorityClassName"] = managed.priority_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": metadata(name, collection.agent.namespace, collection.name, COMPONENT),
        "spec": {
            "selector": {"matchLabels": selector_labels(collection.name, COMPONENT)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {
                    "labels": labels(collection.name, COMPONENT),
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
                },
                "spec": pod_spec,
            },
        },
    }


def _locked_down() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": False,
        "runAsUser": 0,
    }


def _seed_container(image: str) -> dict[str, Any]:
    """Copies the image's /etc/datadog-agent into the writable config volume, as the Helm chart does.

    The image gives that directory to dd-agent:root with group read and write, so uid 0 / gid 0
    reads it through the group bits, without DAC_OVERRIDE; the copies belong to root.
    """
    return {
        "name": "seed-config",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["cp", "-r", "/etc/datadog-agent/.", _CONFIG_SEED_MOUNT],
        "securityContext": _locked_down(),
        "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "10m", "memory": "32Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": _CONFIG_SEED_MOUNT}],
    }


def _agent_container(collection: AuditCollection) -> dict[str, Any]:
    managed = collection.agent.managed
    env = [
        {"name": "DD_API_KEY", "valueFrom": {"secretKeyRef": {
            "name": managed.api_key_secret_ref.name, "key": managed.api_key_secret_ref.key}}},
        {"name": "DD_SITE", "value": managed.site},
        # Without API access the agent cannot ask the kubelet for the node's name.
        {"name": "DD_HOSTNAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "DD_LOGS_ENABLED", "value": "true"},
        # Only the audit log: container logs are the job of the cluster's regular agent.
        {"name": "DD_LOGS_CONFIG_CONTAINER_COLLECT_ALL", "value": "false"},
        {"name": "DD_HEALTH_PORT", "value": str(HEALTH_PORT)},
        # No container discovery: this agent tails one file and has no token to reach the kubelet.
        {"name": "DD_AUTOCONFIG_FROM_ENVIRONMENT", "value": "false"},
    ]
    mounts = [
        {"name": "config", "mountPath": "/etc/datadog-agent"},
        {"name": "audit-config", "mountPath": AGENT_CONFD_DIR, "readOnly": True},
        {"name": "audit-logs", "mountPath": collection.api_server.log_dir, "readOnly": True},
        {"name": "pointdir", "mountPath": POINTDIR},
        {"name": "agent-logs", "mountPath": "/var/log/datadog"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "run", "mountPath": "/var/run/datadog"},
    ]
    return {
        "name": CONTAINER,
        "image": managed.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["agent", "run"],
        "env": env,
        "resources": managed.resources or DEFAULT_RESOURCES,
        "securityContext": _locked_down(),
        "livenessProbe": {
            "httpGet": {"path": "/live", "port": HEALTH_PORT},
            "initialDelaySeconds": 15,
            "periodSeconds": 15,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": HEALTH_PORT},
            "initialDelaySeconds": 15,
            "periodSeconds": 15,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "volumeMounts": mounts,
    }


def _volumes(collection: AuditCollection, config_map_name: str) -> list[dict[str, Any]]:
    return [
        {"name": "config", "emptyDir": {}},
        {"name": "audit-config", "configMap": {
            "name": config_map_name,
            "items": [{"key": AGENT_CONFIG_KEY, "path": AGENT_CONFIG_KEY}],
        }},
        # The directory, not the file: kube-apiserver rotates by renaming and creating a new file.
        {"name": "audit-logs", "hostPath": {"path": collection.api_server.log_dir, "type": "DirectoryOrCreate"}},
        {"name": "pointdir", "hostPath": {"path": POINTDIR_HOST_PATH, "type": "DirectoryOrCreate"}},
        {"name": "agent-logs", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "run", "emptyDir": {}},
    ]
