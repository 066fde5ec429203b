"""DatadogAgent mode: the change to a Datadog Operator ``DatadogAgent`` (datadoghq.com/v2alpha1).

The Operator owns the agent DaemonSet and rewrites it whole, so kaudit configures the resource
the Operator reads. In that CRD ``override.nodeAgent.volumes`` merge by name, the agent
container's ``volumeMounts`` by name and mountPath, ``extraConfd.configMap.items`` by key, and
``tolerations`` are atomic: the apply body carries the user's list plus what is missing.
The Operator mounts the pointdir (``/opt/datadog-agent/run``) itself, so kaudit adds none.
"""

from __future__ import annotations

from kaudit.api.spec import AuditCollection
from kaudit.errors import FieldError, Refused
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


def datadog_agent_patch(collection: AuditCollection, existing, config_map_name: str,
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
    _check_extra_confd(node_agent.get("extraConfd") or {}, config_map_name, where)

    log_dir = collection.api_server.log_dir
    live_mounts = (((node_agent.get("containers") or {}).get("agent") or {}).get("volumeMounts")) or []
    reused = next((m for m in live_mounts if m.get("mountPath") == log_dir
                   and not str(m.get("name", "")).startswith(VOLUME_PREFIX)), None)
    warnings: list[FieldError] = []
    override: dict = {
        "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
        "extraConfd": {"configMap": {
            "name": config_map_name,
            "items": [{"key": AGENT_CONFIG_KEY, "path": CONFD_ITEM_PATH}],
        }},
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


def _check_extra_confd(extra_confd: dict, config_map_name: str, where: str) -> None:
    # The Operator mounts one ConfigMap as the whole extra conf.d (a ConfigMap wins over
    # configDataMap), so kaudit can share it with nothing else.
    config_map = extra_confd.get("configMap") or {}
    if config_map.get("name") and config_map["name"] != config_map_name:
        raise Refused(
            "ExtraConfdConflict",
            f"{where} already points spec.override.nodeAgent.extraConfd.configMap at ConfigMap "
            f"{config_map['name']!r}, and the Datadog Operator mounts only one there; either add key "
            f"{AGENT_CONFIG_KEY} of ConfigMap {config_map_name!r} to yours at path {CONFD_ITEM_PATH} and "
            f"set spec.agent.mode to None, or move your checks out of extraConfd and render again",
        )
    if extra_confd.get("configDataMap"):
        raise Refused(
            "ExtraConfdConflict",
            f"{where} already sets spec.override.nodeAgent.extraConfd.configDataMap, which the Datadog "
            f"Operator ignores once a configMap is set there; move those entries into a ConfigMap and "
            f"render again, or set spec.agent.mode to None and add the audit log configuration yourself",
        )
