"""DaemonSet mode: the smallest server-side-apply body that makes the user's agent collect the log.

The body names only what kaudit adds, so the user's field managers (Helm, kubectl) keep owning
everything else. Lists merge by key (containers and volumes by name, env by name, volumeMounts by
mountPath), except pod tolerations: the core API marks them ``listType=atomic``, so an apply body
that names tolerations replaces the whole list, and this one carries the user's list plus what is
missing. What kaudit added before is recognised by name (volumes ``kaudit-*``) and carried again,
because leaving a field out of the next apply body would delete it.
"""

from __future__ import annotations

from typing import Any, Sequence

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
from kaudit.render.result import AgentPatch
from kaudit.render.targets import DAEMON_SET_SHAPE, find_target, kubectl_get, refuse_if_claimed

VOLUME_PREFIX = "kaudit-"
CONFIG_VOLUME = "kaudit-agent-config"
LOGS_VOLUME = "kaudit-audit-logs"
POINTDIR_VOLUME = "kaudit-pointdir"
# The Datadog page's manual procedure mounts the config here; on Helm or Operator agents that
# mount is ignored, on others it would make the agent tail the log twice.
MANUAL_CONFD_DIR = "/conf.d/kubernetes_audit.d"
DATADOG_OPERATOR = "datadog-operator"
# The kinds whose ownerReference means the Datadog Operator generates the DaemonSet (a DatadogAgent,
# or in recent Operators the DatadogAgentInternal it makes from it). Nothing else says so: the Helm
# chart also labels its DaemonSet agent.datadoghq.com/component (facts 5).
DATADOG_OPERATOR_OWNERS = ("DatadogAgent", "DatadogAgentInternal")
DATADOG_GROUP = "datadoghq.com"
LOGS_ENABLED = "DD_LOGS_ENABLED"
COLLECT_ALL = "DD_LOGS_CONFIG_CONTAINER_COLLECT_ALL"
HELM_RELEASE_ANNOTATION = "meta.helm.sh/release-name"
HELM_NAMESPACE_ANNOTATION = "meta.helm.sh/release-namespace"


def daemon_set_patch(collection: AuditCollection, existing: Sequence[dict[str, Any]], config_map_name: str,
                     config_hash: str) -> AgentPatch:
    ref = collection.agent.daemon_set
    namespace = collection.agent.namespace
    live = find_target(
        existing, "apps", "DaemonSet", ref.name, namespace,
        f"{kubectl_get('daemonset', namespace, ref.name)} > ds.yaml, then pass --existing ds.yaml",
        DAEMON_SET_SHAPE,
    )
    _refuse_foreign_owner(collection, live)
    pod_spec = ((live.get("spec") or {}).get("template") or {}).get("spec") or {}
    where = f"DaemonSet {namespace}/{ref.name}"
    container = _find_container(pod_spec, ref.container, f"{namespace}/{ref.name}")
    warnings: list[FieldError] = []
    path = "spec.agent.daemonSet"

    env, turned_on = _logs_enabled_env(container, where, warnings, path)
    mounts, volumes = _mounts_and_volumes(collection, pod_spec, container, config_map_name, warnings, path)
    _check_root(pod_spec, container, warnings, path)

    patch_container: dict[str, Any] = {"name": ref.container}
    if env:
        patch_container["env"] = env
    if mounts:
        patch_container["volumeMounts"] = mounts
    template_spec: dict[str, Any] = {"containers": [patch_container]}
    if volumes:
        template_spec["volumes"] = volumes
    current_tolerations = list(pod_spec.get("tolerations") or [])
    added_tolerations = missing_control_plane_tolerations(current_tolerations)
    template_spec["tolerations"] = current_tolerations + added_tolerations

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
    events: list[tuple[str, str]] = []
    if turned_on:
        message = (f"{where}: kaudit sets {LOGS_ENABLED}=true on container {ref.container!r} (it was "
                   f"{turned_on!r}); {COLLECT_ALL} is not true there, so the agent collects the audit log and "
                   f"the sources configured for it, not every container's logs")
        warnings.append(FieldError(path, message))
        events.append(("LogCollectionEnabled", message))
    steps = _helm_steps(live, where, turned_on, added_tolerations, _pointdir_is_empty(pod_spec, container))
    return AgentPatch(body=body, warnings=warnings, steps=steps, events=events)


def _helm_steps(live: dict[str, Any], where: str, turned_on: str, added_tolerations: list[dict[str, Any]],
                pointdir_not_on_host: bool) -> list[str]:
    """For a Helm-installed agent: the values that make kaudit's changes survive a helm upgrade.

    A helm upgrade applies the chart's values again (the log switch, the tolerations list); kaudit
    then restores its own within seconds, but until the release carries them the two take turns.
    """
    release = helm_release(live)
    if release is None:
        return []
    values: list[str] = []
    if turned_on or pointdir_not_on_host:
        values.append("datadog.logs.enabled=true (it also gives the agent its pointerdir hostPath at "
                      f"{POINTDIR})")
    if added_tolerations:
        listed = ", ".join(f"{{key: {t['key']}, operator: {t['operator']}, effect: {t['effect']}}}"
                           for t in added_tolerations)
        values.append(f"agents.tolerations with your tolerations plus {listed}")
    if not values:
        return []
    name, namespace = release
    named = f"Helm release {name!r} (namespace {namespace})" if name else "a Helm release"
    return [f"{where} is installed by {named}: a helm upgrade puts the chart's values back and kaudit then "
            f"restores its changes; to make them permanent, set in the release's values: "
            + "; ".join(values) + "."]


def helm_release(live: dict[str, Any]) -> tuple[str, str] | None:
    """(release, namespace) of a Helm-installed object ('' when not known), None when not Helm's.

    Helm writes the meta.helm.sh annotations when it installs (``helm template`` output has
    none); charts, Datadog's included, label their objects app.kubernetes.io/managed-by: Helm.
    """
    meta = live.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if annotations.get(HELM_RELEASE_ANNOTATION):
        return annotations[HELM_RELEASE_ANNOTATION], annotations.get(HELM_NAMESPACE_ANNOTATION) or ""
    if ((meta.get("labels") or {}).get("app.kubernetes.io/managed-by")) == "Helm":
        return "", ""
    return None


def _refuse_foreign_owner(collection: AuditCollection, live: dict[str, Any]) -> None:
    meta = live.get("metadata") or {}
    where = f"DaemonSet {meta.get('namespace', collection.agent.namespace)}/{meta.get('name')}"
    if operator_owner(meta):
        raise Refused(
            "ManagedByDatadogOperator",
            f"{where} is managed by the Datadog Operator ({operator_owner(meta)}), which replaces its whole "
            f"spec on the next change of the DatadogAgent resource; set spec.agent.mode to DatadogAgent and "
            f"spec.agent.datadogAgent.name to that DatadogAgent instead",
        )
    refuse_if_claimed(live, collection.name, where)


def operator_owner(meta: dict[str, Any]) -> str:
    """What shows that the Datadog Operator generates this object ('' when nothing does)."""
    if ((meta.get("labels") or {}).get("app.kubernetes.io/managed-by")) == DATADOG_OPERATOR:
        return f"label app.kubernetes.io/managed-by: {DATADOG_OPERATOR}"
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") in DATADOG_OPERATOR_OWNERS and str(ref.get("apiVersion", "")).split("/")[0] == DATADOG_GROUP:
            return f"owned by {ref.get('kind')} {ref.get('name')}"
    return ""


def _find_container(pod_spec: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    containers = pod_spec.get("containers") or []
    for container in containers:
        if container.get("name") == name:
            found: dict[str, Any] = container
            return found
    names = ", ".join(c.get("name") or "?" for c in containers) or "none"
    raise Refused(
        "TargetNotFound",
        f"DaemonSet {where} has no container {name!r} (it has: {names}); "
        f"set spec.agent.daemonSet.container to the agent container",
    )


def _env(container: dict[str, Any], name: str) -> dict[str, Any] | None:
    # The container sees the last entry of a name (the kubelet's rule for duplicates).
    return next((e for e in reversed(container.get("env") or []) if e.get("name") == name), None)


def _is_true(entry: dict[str, Any] | None) -> bool:
    return entry is not None and str(entry.get("value", "")).strip().lower() == "true"


def _logs_enabled_env(container: dict[str, Any], where: str, warnings: list[FieldError], path: str) -> tuple[list[dict[str, Any]], str]:
    """kaudit's DD_LOGS_ENABLED entry, and the user's value when kaudit turns it on ('' otherwise).

    Turning log collection on is the step of the manual procedure, and it collects nothing but
    configured sources while container collection is off. Where container collection is on (or
    cannot be read), turning it on would start shipping every container's logs: refused.
    """
    current = _env(container, LOGS_ENABLED)
    if current is None:
        return [{"name": LOGS_ENABLED, "value": "true"}], ""
    if "valueFrom" in current:
        warnings.append(FieldError(
            path, f"{LOGS_ENABLED} comes from a reference kaudit cannot read offline; it must resolve to "
                  "true, or the agent collects no logs"))
        return [], ""
    if _is_true(current):
        # Same value as the user's: applying it shares ownership and keeps the body the same
        # whether or not kaudit added it in an earlier apply.
        return [{"name": LOGS_ENABLED, "value": current.get("value")}], ""
    collect_all = _env(container, COLLECT_ALL)
    if _is_true(collect_all) or (collect_all is not None and "valueFrom" in collect_all):
        shown = "from a reference kaudit cannot read" if "valueFrom" in (collect_all or {}) else "true"
        raise Refused(
            "LogCollectionDisabled",
            f"{where} sets {LOGS_ENABLED}={current.get('value', '')!r} and {COLLECT_ALL} {shown} on its agent "
            f"container: turning log collection on would also start shipping every container's logs from "
            f"every node, so kaudit does not; turn it on yourself where the agent is installed (Helm: "
            f"datadog.logs.enabled=true, or datadog.logs.containerCollectAll=false to collect only the "
            f"audit log) and render again",
        )
    return [{"name": LOGS_ENABLED, "value": "true"}], str(current.get("value", ""))


def _pointdir_is_empty(pod_spec: dict[str, Any], container: dict[str, Any]) -> bool:
    """Whether the agent's own pointdir mount is a volume that does not survive a restart."""
    mount = next((m for m in container.get("volumeMounts") or [] if m.get("mountPath") == POINTDIR), None)
    if mount is None or str(mount.get("name", "")).startswith(VOLUME_PREFIX):
        return False
    volume: dict[str, Any] = next((v for v in pod_spec.get("volumes") or [] if v.get("name") == mount.get("name")), {})
    return "hostPath" not in volume


def _mounts_and_volumes(collection: AuditCollection, pod_spec: dict[str, Any], container: dict[str, Any],
                        config_map_name: str, warnings: list[FieldError],
                        path: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    live_mounts = {m.get("mountPath"): m for m in container.get("volumeMounts") or []}
    live_volumes = {v.get("name"): v for v in pod_spec.get("volumes") or []}
    log_dir = collection.api_server.log_dir
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []

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


def _check_root(pod_spec: dict[str, Any], container: dict[str, Any], warnings: list[FieldError], path: str) -> None:
    for context in (pod_spec.get("securityContext") or {}, container.get("securityContext") or {}):
        user = context.get("runAsUser")
        if (user is not None and user != 0) or context.get("runAsNonRoot") is True:
            warnings.append(FieldError(path, "the agent container does not run as root; kube-apiserver writes "
                                             "the audit log readable by root only (mode 0600)"))
            return
