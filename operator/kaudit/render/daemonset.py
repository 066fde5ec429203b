"""DaemonSet mode: the smallest server-side-apply body that makes the user's agent collect the log.

The body names only what kaudit adds, so the user's field managers (Helm, kubectl) keep owning
everything else. Lists merge by key (containers and volumes by name, env by name, volumeMounts by
mountPath), except pod tolerations: the core API marks them ``listType=atomic``, so an apply body
that names tolerations replaces the whole list, and this one carries the user's list plus what is
missing. What kaudit added before is recognised by name (volumes ``kaudit-*``) and carried again,
because leaving a field out of the next apply body would delete it.
"""

from __future__ import annotations

from kaudit.api.spec import AuditCollection
from kaudit.errors import FieldError, Refused
from kaudit.render.common import (
    AGENT_CONFD_DIR,
    AGENT_CONFIG_KEY,
    COLLECTION_LABEL,
    CONFIG_HASH_ANNOTATION,
    POINTDIR,
    missing_control_plane_tolerations,
)
from kaudit.render.targets import DAEMON_SET_SHAPE, find_target, kubectl_get, refuse_if_claimed

VOLUME_PREFIX = "kaudit-"
CONFIG_VOLUME = "kaudit-agent-config"
LOGS_VOLUME = "kaudit-audit-logs"
POINTDIR_VOLUME = "kaudit-pointdir"
# The Datadog page's manual procedure mounts the config here; on Helm or Operator agents that
# mount is ignored, on others it would make the agent tail the log twice.
MANUAL_CONFD_DIR = "/conf.d/kubernetes_audit.d"
DATADOG_OPERATOR = "datadog-operator"


def daemon_set_patch(collection: AuditCollection, existing, config_map_name: str,
                     config_hash: str) -> tuple[dict, list[FieldError]]:
    ref = collection.agent.daemon_set
    namespace = collection.agent.namespace
    live = find_target(
        existing, "apps", "DaemonSet", ref.name, namespace,
        f"{kubectl_get('daemonset', namespace, ref.name)} > ds.yaml, then pass --existing ds.yaml",
        DAEMON_SET_SHAPE,
    )
    _refuse_foreign_owner(collection, live)
    pod_spec = ((live.get("spec") or {}).get("template") or {}).get("spec") or {}
    container = _find_container(pod_spec, ref.container, f"{namespace}/{ref.name}")
    warnings: list[FieldError] = []
    path = "spec.agent.daemonSet"

    env = _logs_enabled_env(container, f"{namespace}/{ref.name}", warnings, path)
    mounts, volumes = _mounts_and_volumes(collection, pod_spec, container, config_map_name, warnings, path)
    _check_root(pod_spec, container, warnings, path)

    patch_container: dict = {"name": ref.container}
    if env:
        patch_container["env"] = env
    if mounts:
        patch_container["volumeMounts"] = mounts
    template_spec: dict = {"containers": [patch_container]}
    if volumes:
        template_spec["volumes"] = volumes
    current_tolerations = list(pod_spec.get("tolerations") or [])
    template_spec["tolerations"] = current_tolerations + missing_control_plane_tolerations(current_tolerations)

    body = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": ref.name, "namespace": namespace, "labels": {COLLECTION_LABEL: collection.name}},
        "spec": {
            "template": {
                "metadata": {"annotations": {CONFIG_HASH_ANNOTATION: config_hash}},
                "spec": template_spec,
            }
        },
    }
    return body, warnings


def _refuse_foreign_owner(collection: AuditCollection, live: dict) -> None:
    meta = live.get("metadata") or {}
    live_labels = meta.get("labels") or {}
    if live_labels.get("app.kubernetes.io/managed-by") == DATADOG_OPERATOR or any(
        key.startswith("agent.datadoghq.com/") for key in live_labels
    ):
        raise Refused(
            "ManagedByDatadogOperator",
            f"DaemonSet {meta.get('namespace', collection.agent.namespace)}/{meta.get('name')} is managed "
            f"by the Datadog Operator, which replaces its whole spec on the next change of the "
            f"DatadogAgent resource; set spec.agent.mode to DatadogAgent and spec.agent.datadogAgent.name "
            f"to that DatadogAgent instead",
        )
    refuse_if_claimed(live, collection.name, f"DaemonSet {meta.get('namespace', collection.agent.namespace)}/{meta.get('name')}")

def _find_container(pod_spec: dict, name: str, where: str) -> dict:
    containers = pod_spec.get("containers") or []
    for container in containers:
        if container.get("name") == name:
            return container
    names = ", ".join(c.get("name") or "?" for c in containers) or "none"
    raise Refused(
        "TargetNotFound",
        f"DaemonSet {where} has no container {name!r} (it has: {names}); "
        f"set spec.agent.daemonSet.container to the agent container",
    )


def _logs_enabled_env(container: dict, where: str, warnings: list[FieldError], path: str) -> list[dict]:
    current = next((e for e in container.get("env") or [] if e.get("name") == "DD_LOGS_ENABLED"), None)
    if current is None:
        return [{"name": "DD_LOGS_ENABLED", "value": "true"}]
    if "valueFrom" in current:
        warnings.append(FieldError(
            path, "DD_LOGS_ENABLED comes from a reference kaudit cannot read offline; it must resolve to "
                  "true, or the agent collects no logs"))
        return []
    value = str(current.get("value", "")).strip().lower()
    if value == "true":
        # Same value as the user's: applying it shares ownership and keeps the body the same
        # whether or not kaudit added it in an earlier apply.
        return [{"name": "DD_LOGS_ENABLED", "value": current.get("value")}]
    raise Refused(
        "LogCollectionDisabled",
        f"DaemonSet {where} sets DD_LOGS_ENABLED={current.get('value', '')!r} on its agent container, and "
        f"kaudit never overrides a value you set (turning it on also starts log collection on every "
        f"node); enable log collection where the agent is installed (Helm: datadog.logs.enabled=true) "
        f"and render again",
    )


def _mounts_and_volumes(collection: AuditCollection, pod_spec: dict, container: dict,
                        config_map_name: str, warnings: list[FieldError],
                        path: str) -> tuple[list[dict], list[dict]]:
    live_mounts = {m.get("mountPath"): m for m in container.get("volumeMounts") or []}
    live_volumes = {v.get("name"): v for v in pod_spec.get("volumes") or []}
    log_dir = collection.api_server.log_dir
    mounts: list[dict] = []
    volumes: list[dict] = []

    def ours(mount_path: str) -> bool:
        mount = live_mounts.get(mount_path)
        return mount is None or str(mount.get("name", "")).startswith(VOLUME_PREFIX)

    def conflict(mount_path: str, why: str) -> Refused:
        mount = live_mounts[mount_path]
        return Refused("MountConflict", f"the agent container already mounts volume {mount.get('name')!r} "
                                        f"at {mount_path}; {why}")

    # The log configuration, where the agent itself reads it.
    if not ours(AGENT_CONFD_DIR):
        raise conflict(AGENT_CONFD_DIR, "remove that mount (kaudit provides this directory) and render again")
    mounts.append({"name": CONFIG_VOLUME, "mountPath": AGENT_CONFD_DIR, "readOnly": True})
    volumes.append({"name": CONFIG_VOLUME, "configMap": {
        "name": config_map_name, "items": [{"key": AGENT_CONFIG_KEY, "path": AGENT_CONFIG_KEY}]}})
    if MANUAL_CONFD_DIR in live_mounts:
        warnings.append(FieldError(path, f"the agent container also mounts volume "
                                         f"{live_mounts[MANUAL_CONFD_DIR].get('name')!r} at {MANUAL_CONFD_DIR} "
                                         f"(the manual set-up); remove it, or the log may be collected twice"))

    # The audit log directory: reuse a mount of the same host directory, refuse a different one.
    if ours(log_dir):
        mounts.append({"name": LOGS_VOLUME, "mountPath": log_dir, "readOnly": True})
        volumes.append({"name": LOGS_VOLUME, "hostPath": {"path": log_dir, "type": "DirectoryOrCreate"}})
    else:
        host_path = (live_volumes.get(live_mounts[log_dir].get("name")) or {}).get("hostPath") or {}
        if host_path.get("path", "").rstrip("/") != log_dir:
            raise conflict(log_dir, f"it is not the host directory {log_dir} that kube-apiserver writes to")

    # The pointdir: Helm and Operator agents already mount one; a second mount makes the pod invalid.
    if ours(POINTDIR):
        mounts.append({"name": POINTDIR_VOLUME, "mountPath": POINTDIR})
        volumes.append({"name": POINTDIR_VOLUME, "hostPath": {"path": POINTDIR, "type": "DirectoryOrCreate"}})
    else:
        volume = live_volumes.get(live_mounts[POINTDIR].get("name")) or {}
        if "hostPath" not in volume:
            warnings.append(FieldError(path, f"the agent keeps its read offsets in {POINTDIR}, which is volume "
                                             f"{live_mounts[POINTDIR].get('name')!r}, not a hostPath: a restarted "
                                             f"agent will skip or repeat audit lines (Helm: enable "
                                             f"datadog.logs.enabled to get a hostPath there)"))
    return mounts, volumes


def _check_root(pod_spec: dict, container: dict, warnings: list[FieldError], path: str) -> None:
    for context in (pod_spec.get("securityContext") or {}, container.get("securityContext") or {}):
        user = context.get("runAsUser")
        if (user is not None and user != 0) or context.get("runAsNonRoot") is True:
            warnings.append(FieldError(path, "the agent container does not run as root; kube-apiserver writes "
                                             "the audit log readable by root only (mode 0600)"))
            return
