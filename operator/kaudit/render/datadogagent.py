"""DatadogAgent mode: the change to a Datadog Operator ``DatadogAgent`` (datadoghq.com/v2alpha1).

The Operator owns the agent DaemonSet and rewrites it whole, so kaudit configures the resource
the Operator reads. In that CRD ``override.nodeAgent.volumes`` merge by name, the agent
container's ``volumeMounts`` by name and mountPath, ``extraConfd.configMap.items`` by key, and
``tolerations`` are atomic: the apply body carries the user's list plus what is missing.
The Operator mounts the pointdir (``/opt/datadog-agent/run``) itself, so kaudit adds none.
"""

from __future__ import annotations

from typing import Any, Sequence

from kaudit.api.spec import AuditCollection
from kaudit.errors import FieldError, Refused
from kaudit.render.agent_config import agent_config_text
from kaudit.render.common import (
    AGENT_CONFIG_KEY,
    COLLECTION_LABEL,
    CONFIG_HASH_ANNOTATION,
    missing_control_plane_tolerations,
)
from kaudit.render.daemonset import LOGS_VOLUME, VOLUME_PREFIX
from kaudit.render.result import AgentPatch
from kaudit.render.targets import DATADOG_AGENT_SHAPE, find_target, kubectl_get, refuse_if_claimed

API_VERSION = "datadoghq.com/v2alpha1"
# extraConfd items are paths below conf.d, as the Operator copies them there.
CONFD_ITEM_PATH = "kubernetes_audit.d/conf.yaml"
# With configDataMap each key becomes a file of that name in conf.d (the Operator's own ConfigMap).
CONFD_DATA_KEY = "kubernetes_audit.yaml"


def datadog_agent_patch(collection: AuditCollection, existing: Sequence[dict[str, Any]], config_map_name: str,
                        config_hash: str) -> AgentPatch:
    ref = collection.agent.datadog_agent
    namespace = collection.agent.namespace
    live = find_target(
        existing, "datadoghq.com", "DatadogAgent", ref.name, namespace,
        f"{kubectl_get('datadogagent', namespace, ref.name)} > dda.yaml, then pass --existing dda.yaml",
        DATADOG_AGENT_SHAPE,
    )
    where = f"DatadogAgent {namespace}/{ref.name}"
    spec = live.get("spec") or {}
    refuse_if_claimed(live, collection.name, where)
    logs = ((spec.get("features") or {}).get("logCollection") or {})
    if logs.get("enabled") is False:
        raise Refused(
            "LogCollectionDisabled",
            f"{where} sets spec.features.logCollection.enabled: false, and kaudit never overrides a value "
            f"you set (turning it on also starts log collection on every node); set it to true and render again",
        )
    node_agent = ((spec.get("override") or {}).get("nodeAgent") or {})
    extra_confd = _extra_confd(collection, node_agent.get("extraConfd") or {}, config_map_name, where)

    log_dir = collection.api_server.log_dir
    live_mounts = (((node_agent.get("containers") or {}).get("agent") or {}).get("volumeMounts")) or []
    reused = next((m for m in live_mounts if m.get("mountPath") == log_dir
                   and not str(m.get("name", "")).startswith(VOLUME_PREFIX)), None)
    warnings: list[FieldError] = []
    override: dict[str, Any] = {
        "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
        "extraConfd": extra_confd,
    }
    if reused is None:
        override["volumes"] = [{"name": LOGS_VOLUME, "hostPath": {"path": log_dir, "type": "DirectoryOrCreate"}}]
        override["containers"] = {"agent": {"volumeMounts": [
            {"name": LOGS_VOLUME, "mountPath": log_dir, "readOnly": True}]}}
    else:
        warnings.append(FieldError("spec.agent.datadogAgent", f"reusing the agent's existing mount "
                                                              f"{reused.get('name')!r} of {log_dir}"))
    current = list(node_agent.get("tolerations") or [])
    override["tolerations"] = current + missing_control_plane_tolerations(current)

    body = {
        "apiVersion": API_VERSION,
        "kind": "DatadogAgent",
        "metadata": {"name": ref.name, "namespace": namespace, "labels": {COLLECTION_LABEL: collection.name}},
        "spec": {
            "features": {"logCollection": {"enabled": True}},
            "override": {"nodeAgent": override},
        },
    }
    return AgentPatch(body=body, warnings=warnings)


def _extra_confd(collection: AuditCollection, extra_confd: dict[str, Any], config_map_name: str, where: str) -> dict[str, Any]:
    """kaudit's part of ``extraConfd``, merged with what the user already has there.

    The Operator mounts one source as the extra conf.d: a ConfigMap if one is named, else a
    ConfigMap it makes from ``configDataMap`` (a map: each key is a file, and server-side apply
    merges kaudit's key with the user's). So kaudit adds a key where the user uses configDataMap,
    names its own ConfigMap where the user has neither, and cannot share the user's ConfigMap.
    """
    config_map = extra_confd.get("configMap") or {}
    if config_map.get("name") and config_map["name"] != config_map_name:
        raise Refused(
            "ExtraConfdConflict",
            f"{where} already points spec.override.nodeAgent.extraConfd.configMap at ConfigMap "
            f"{config_map['name']!r}, and the Datadog Operator mounts only that one there; either add key "
            f"{AGENT_CONFIG_KEY} of ConfigMap {config_map_name!r} to yours at path {CONFD_ITEM_PATH} and "
            f"set spec.agent.mode to None, or move your checks into extraConfd.configDataMap (kaudit adds "
            f"its file there) and render again",
        )
    if extra_confd.get("configDataMap"):
        return {"configDataMap": {CONFD_DATA_KEY: agent_config_text(collection)}}
    return {"configMap": {"name": config_map_name, "items": [{"key": AGENT_CONFIG_KEY, "path": CONFD_ITEM_PATH}]}}
