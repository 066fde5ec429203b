"""The user's next step on the kube-apiserver side, rendered from the resource's own settings.

    static_pod_changes(collection) -> dict        # partial pod spec for kube-apiserver.yaml
    kubeadm_cluster_configuration(collection, api_version=KUBEADM_V1BETA4) -> dict
    snippet_yaml(obj) -> str                      # either of the above as YAML text
    apiserver_warnings(collection) -> list[FieldError]

kube-apiserver needs five flags (policy file, log path, and the three rotation flags, always
explicit because their defaults changed in 1.36) and two hostPath volumes: the policy directory
(read-only) and the log directory (read-write, created if absent). The policy's *directory* is
mounted, not the file: the installer replaces the file by rename, and a bind mount of a single file
keeps pointing at the inode it was made from.

kubeadm: ``kubeadm.k8s.io/v1beta4`` (kubeadm 1.31 and later) writes ``apiServer.extraArgs`` as a
list of ``{name, value}``; ``v1beta3`` wrote a ``{flag: value}`` mapping. Both are rendered;
``extraVolumes`` entries (``name, hostPath, mountPath, readOnly, pathType``) are the same in both.
"""

from __future__ import annotations

import posixpath
from typing import Any

import yaml

from kaudit.api.spec import AuditCollection
from kaudit.errors import FieldError
from kaudit.render.policy import api_server_flags

KUBEADM_V1BETA4 = "kubeadm.k8s.io/v1beta4"
KUBEADM_V1BETA3 = "kubeadm.k8s.io/v1beta3"
POLICY_VOLUME = "kaudit-audit-policy"
LOG_VOLUME = "kaudit-audit-log"
APISERVER_CONTAINER = "kube-apiserver"

# Host paths kubeadm already mounts into kube-apiserver: a second volume at one of them would make
# the pod invalid (mountPath must be unique).
KUBEADM_APISERVER_MOUNTS = (
    "/etc/ca-certificates", "/etc/kubernetes/pki", "/etc/pki", "/etc/ssl/certs",
    "/usr/local/share/ca-certificates", "/usr/share/ca-certificates",
)
STATIC_POD_DIR = "/etc/kubernetes/manifests"
# Directories too broad to hand to the installer read-write (or to mount into kube-apiserver).
BROAD_DIRECTORIES = ("/", "/etc", "/etc/kubernetes", "/var", "/var/log", "/var/lib", "/usr")


def flag_arguments(collection: AuditCollection) -> list[tuple[str, str]]:
    """The audit flags as (name without dashes, value) pairs, in the order of the flag list."""
    pairs = []
    for flag in api_server_flags(collection):
        name, _, value = flag.removeprefix("--").partition("=")
        pairs.append((name, value))
    return pairs


def _mounts(collection: AuditCollection) -> list[dict[str, Any]]:
    """(volume name, host dir, read-only) for kube-apiserver; one volume when both dirs coincide."""
    api = collection.api_server
    policy_dir = posixpath.normpath(api.policy_dir)
    log_dir = posixpath.normpath(api.log_dir)
    if policy_dir == log_dir:
        return [{"name": LOG_VOLUME, "path": log_dir, "readOnly": False}]
    return [
        {"name": POLICY_VOLUME, "path": policy_dir, "readOnly": True},
        {"name": LOG_VOLUME, "path": log_dir, "readOnly": False},
    ]


def static_pod_changes(collection: AuditCollection) -> dict[str, Any]:
    """What to add to /etc/kubernetes/manifests/kube-apiserver.yaml, as a partial Pod."""
    mounts = _mounts(collection)
    container = {
        "name": APISERVER_CONTAINER,
        "command": [f"--{name}={value}" for name, value in flag_arguments(collection)],
        "volumeMounts": [
            {"name": m["name"], "mountPath": m["path"], **({"readOnly": True} if m["readOnly"] else {})}
            for m in mounts
        ],
    }
    volumes = [{"name": m["name"], "hostPath": {"path": m["path"], "type": "DirectoryOrCreate"}} for m in mounts]
    return {"spec": {"containers": [container], "volumes": volumes}}


def kubeadm_cluster_configuration(collection: AuditCollection, api_version: str = KUBEADM_V1BETA4) -> dict[str, Any]:
    """The ClusterConfiguration fragment for ``kubeadm init --config`` / the kubeadm-config ConfigMap."""
    pairs = flag_arguments(collection)
    if api_version == KUBEADM_V1BETA3:
        extra_args: object = {name: value for name, value in pairs}
    elif api_version == KUBEADM_V1BETA4:
        extra_args = [{"name": name, "value": value} for name, value in pairs]
    else:
        raise ValueError(f"unsupported kubeadm API version {api_version!r}")
    volumes = [
        {"name": m["name"], "hostPath": m["path"], "mountPath": m["path"], "readOnly": m["readOnly"],
         "pathType": "DirectoryOrCreate"}
        for m in _mounts(collection)
    ]
    return {
        "apiVersion": api_version,
        "kind": "ClusterConfiguration",
        "apiServer": {"extraArgs": extra_args, "extraVolumes": volumes},
    }


def snippet_yaml(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def apiserver_warnings(collection: AuditCollection) -> list[FieldError]:
    """Paths that would make the kube-apiserver pod invalid or the installer's mount too broad."""
    api = collection.api_server
    warnings = []
    for field, directory in (("policyFile", api.policy_dir), ("logFile", api.log_dir)):
        path = f"spec.apiServer.{field}"
        directory = posixpath.normpath(directory)
        if _inside(directory, STATIC_POD_DIR):
            warnings.append(FieldError(path, f"{directory} holds static pod manifests: the kubelet would read "
                                             f"every file there as a pod; use a directory of its own"))
        elif directory in BROAD_DIRECTORIES:
            warnings.append(FieldError(path, f"{directory} is a shared system directory: kube-apiserver (and, for "
                                             f"the policy, kaudit's installer) would mount all of it; use a "
                                             f"directory of its own such as /etc/kubernetes/audit-policies"))
        elif any(_inside(directory, mount) for mount in KUBEADM_APISERVER_MOUNTS):
            warnings.append(FieldError(path, f"{directory} is inside a directory kubeadm already mounts into "
                                             f"kube-apiserver; a second hostPath volume there makes the pod "
                                             f"invalid: use a directory of its own"))
    return warnings
