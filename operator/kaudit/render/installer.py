"""The node-side policy installer's objects: DaemonSet, ServiceAccount, Role, RoleBinding.

    installer_objects(collection: AuditCollection, *, namespace: str, image: str) -> list[dict]

Pure. ``namespace`` is the operator namespace (where the policy ConfigMap
``kaudit-<name>-policy`` lives and where the node reports go); ``image`` is the operator's own
image, whose ``kaudit install-policy`` is the entry point. Called by ``render()`` when
``spec.apiServer.installPolicy`` is true.

The pod is as small as its job allows (docs/delivery.md explains each choice):

- it runs as uid 0 because the policy directory under ``/etc/kubernetes`` belongs to root with mode
  0755: only its owner may create files there. It keeps **no capability** (``drop: [ALL]``): the
  owner's permission bits are enough for root to write a root-owned directory, so neither
  CAP_DAC_OVERRIDE nor CAP_FOWNER/CAP_CHOWN is needed (the files it creates are root's already);
- ``allowPrivilegeEscalation: false``, ``readOnlyRootFilesystem: true``, seccomp RuntimeDefault, not
  privileged, no host namespaces;
- it mounts only the policy file's directory from the host (``DirectoryOrCreate``) and the policy
  ConfigMap as a whole volume (not ``subPath``, which would never see an update);
- its service account may only create and patch Leases in the operator namespace (node reports)
  and, through the chart's ClusterRole ``<release>-policy-approval``, get AuditCollections (the
  approval check, kaudit.installer.approval). It can change nothing that reaches a node.

No config-hash annotation on the pod template: the installer follows ConfigMap changes itself, so a
policy change must not restart it (nor, through it, anything else).
"""

from __future__ import annotations

from typing import Any

from kaudit.api.spec import INSTALLER_COMPONENT as COMPONENT
from kaudit.api.spec import AuditCollection
from kaudit.render.common import (
    CONTROL_PLANE_ROLE_LABELS,
    CONTROL_PLANE_TOLERATIONS,
    labels,
    metadata,
    object_name,
    selector_labels,
)
from kaudit.render.policy import COMPONENT as POLICY_COMPONENT
from kaudit.render.policy import POLICY_KEY

SOURCE_DIR = "/etc/kaudit/policy"  # where the ConfigMap is mounted inside the pod
SOURCE_VOLUME = "policy-source"
TARGET_VOLUME = "policy-dir"


def installer_objects(collection: AuditCollection, *, namespace: str, image: str) -> list[dict[str, Any]]:
    name = object_name(collection.name, COMPONENT)
    return [
        _service_account(collection, name, namespace),
        _role(collection, name, namespace),
        _role_binding(collection, name, namespace),
        _daemon_set(collection, name, namespace, image),
    ]


def _service_account(collection: AuditCollection, name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(name, namespace, collection.name, COMPONENT),
    }


def _role(collection: AuditCollection, name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(name, namespace, collection.name, COMPONENT),
        # Server-side apply of its own report: "patch", plus "create" the first time (an apply that
        # creates is authorised as create). No get/list/watch/delete: the only read it makes, of its
        # AuditCollection, is granted cluster-wide by the chart (AuditCollections are cluster-scoped).
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "patch"]}],
    }


def _role_binding(collection: AuditCollection, name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(name, namespace, collection.name, COMPONENT),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }


def _field_env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}


def _container(collection: AuditCollection, image: str) -> dict[str, Any]:
    api = collection.api_server
    args = [
        "install-policy",
        "--from", f"{SOURCE_DIR}/{POLICY_KEY}",
        "--to", api.policy_file,
        "--collection", collection.name,
        "--report",
    ]
    if api.kubernetes_version:
        args += ["--kubernetes-version", api.kubernetes_version]
    return {
        "name": "installer",
        "image": image,
        "command": ["kaudit"],
        "args": args,
        "env": [
            _field_env("NODE_NAME", "spec.nodeName"),
            _field_env("POD_NAMESPACE", "metadata.namespace"),
            _field_env("POD_NAME", "metadata.name"),
            _field_env("POD_UID", "metadata.uid"),
        ],
        "volumeMounts": [
            {"name": SOURCE_VOLUME, "mountPath": SOURCE_DIR, "readOnly": True},
            # Same path as on the host, so logs and reports name the file kube-apiserver reads.
            {"name": TARGET_VOLUME, "mountPath": api.policy_dir},
        ],
        "resources": {
            "requests": {"cpu": "10m", "memory": "64Mi"},
            "limits": {"memory": "128Mi"},
        },
        # uid/gid 0 and seccomp come from the pod's securityContext; here: no capability at all.
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    }


def _daemon_set(collection: AuditCollection, name: str, namespace: str, image: str) -> dict[str, Any]:
    api = collection.api_server
    pod_spec = {
        "serviceAccountName": name,
        "automountServiceAccountToken": True,  # for the node report only (Role above)
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # Either role label marks a control-plane node (the legacy "master" one on older clusters);
        # node selector terms are ORed.
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": label, "operator": "Exists"}]}
                        for label in CONTROL_PLANE_ROLE_LABELS
                    ]
                }
            }
        },
        "tolerations": [dict(t) for t in CONTROL_PLANE_TOLERATIONS],
        "terminationGracePeriodSeconds": 10,
        "containers": [_container(collection, image)],
        "volumes": [
            {
                "name": SOURCE_VOLUME,
                "configMap": {
                    "name": object_name(collection.name, POLICY_COMPONENT),
                    "items": [{"key": POLICY_KEY, "path": POLICY_KEY}],
                    "defaultMode": 0o400,
                },
            },
            {"name": TARGET_VOLUME, "hostPath": {"path": api.policy_dir, "type": "DirectoryOrCreate"}},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": metadata(name, namespace, collection.name, COMPONENT),
        "spec": {
            "selector": {"matchLabels": selector_labels(collection.name, COMPONENT)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels(collection.name, COMPONENT)},
                "spec": pod_spec,
            },
        },
    }
