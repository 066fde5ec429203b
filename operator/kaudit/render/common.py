"""Names, labels, hashes and ordering shared by every renderer."""

from __future__ import annotations

import hashlib
from typing import Any

MANAGED_BY = "kaudit"
COLLECTION_LABEL = "kaudit.dev/collection"
CONFIG_HASH_ANNOTATION = "kaudit.dev/config-hash"
POLICY_HASH_ANNOTATION = "kaudit.dev/policy-hash"

# Where the agent reads its log configuration in every mode (facts: the agent container must see
# the file under /etc/datadog-agent/conf.d itself; a /conf.d mount is only copied by init scripts).
AGENT_CONFD_DIR = "/etc/datadog-agent/conf.d/kubernetes_audit.d"
AGENT_CONFIG_KEY = "conf.yaml"
POINTDIR = "/opt/datadog-agent/run"

CONTROL_PLANE_ROLE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
# kubeadm taints control-plane nodes with the first; clusters set up before 1.24 with the second.
CONTROL_PLANE_TOLERATIONS = tuple(
    {"key": key, "operator": "Exists", "effect": "NoSchedule"} for key in CONTROL_PLANE_ROLE_LABELS
)


def object_name(collection: str, component: str) -> str:
    return f"kaudit-{collection}-{component}"


def labels(collection: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/instance": collection,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/name": "kaudit",
        "app.kubernetes.io/part-of": "kaudit",
        COLLECTION_LABEL: collection,
    }


def selector_labels(collection: str, component: str) -> dict[str, str]:
    """The subset of :func:`labels` that never changes, for immutable DaemonSet selectors."""
    return {
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/instance": collection,
        "app.kubernetes.io/name": "kaudit",
    }


def metadata(name: str, namespace: str | None, collection: str, component: str,
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = labels(collection, component)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_LEADING_KEYS = ("apiVersion", "kind", "metadata")


def canonical(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy with a stable key order: apiVersion, kind, metadata first, everything else sorted.

    Same input → same bytes, whatever order the user's files or dict building used.
    """
    ordered = {key: _sorted(obj[key]) for key in _LEADING_KEYS if key in obj}
    for key in sorted(k for k in obj if k not in _LEADING_KEYS):
        ordered[key] = _sorted(obj[key])
    return ordered


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def tolerates(tolerations: list[dict[str, Any]] | tuple[dict[str, Any], ...], taint: dict[str, Any]) -> bool:
    """Whether any toleration tolerates ``taint`` ({key, value?, effect}), as the scheduler decides."""
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        operator = t.get("operator") or "Equal"
        if not t.get("key"):
            if operator == "Exists":
                return True
            continue
        if t.get("key") != taint.get("key"):
            continue
        if operator == "Exists" or (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def missing_control_plane_tolerations(tolerations: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    taints = [{"key": t["key"], "effect": t["effect"]} for t in CONTROL_PLANE_TOLERATIONS]
    return [dict(t) for t, taint in zip(CONTROL_PLANE_TOLERATIONS, taints) if not tolerates(tolerations, taint)]
