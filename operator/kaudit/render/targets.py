"""Finding the user's agent object among the ``existing`` objects handed to the renderer."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from kaudit.api.spec import AgentTarget
from kaudit.errors import FieldError, InvalidInput, Refused
from kaudit.render.common import COLLECTION_LABEL

# The parts of a live object the renderer reads, as a shape: a dict is an object whose listed
# keys have those shapes, a one-item list a list of items of that shape, ``str`` a string.
# Absent or null fields are fine; a wrong type is bad input (a hand-edited --existing file),
# reported by path instead of failing deep inside the renderer.
_TOLERATION = {"key": str, "operator": str, "effect": str, "value": str}
_MOUNT = {"name": str, "mountPath": str}
_CONTAINER = {"name": str, "env": [{"name": str}], "volumeMounts": [_MOUNT], "securityContext": {}}
DAEMON_SET_SHAPE = {
    "metadata": {"labels": {}, "annotations": {}, "ownerReferences": [{"kind": str, "apiVersion": str}]},
    "spec": {"template": {"metadata": {"labels": {}, "annotations": {}}, "spec": {
        "containers": [_CONTAINER], "initContainers": [_CONTAINER],
        "volumes": [{"name": str, "hostPath": {"path": str}}], "tolerations": [_TOLERATION], "securityContext": {},
    }}},
}
DATADOG_AGENT_SHAPE = {
    "metadata": {"labels": {}, "annotations": {}},
    "spec": {"features": {"logCollection": {}}, "override": {"nodeAgent": {
        "extraConfd": {"configMap": {"name": str}},
        "containers": {"agent": {"volumeMounts": [_MOUNT]}},
        "volumes": [{"name": str}],
        "tolerations": [_TOLERATION],
    }}},
}


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def shape_errors(value: Any, shape: Any, path: str) -> list[FieldError]:
    """Where ``value`` does not have ``shape`` (see DAEMON_SET_SHAPE), as FieldErrors."""
    if value is None:
        return []
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [FieldError(path, f"Invalid value: expected an object, got {_json_type(value)}")]
        return [e for key, sub in shape.items() for e in shape_errors(value.get(key), sub, f"{path}.{key}")]
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [FieldError(path, f"Invalid value: expected a list, got {_json_type(value)}")]
        return [e for i, item in enumerate(value)
                for e in (shape_errors(item, shape[0], f"{path}[{i}]") if item is not None
                          else [FieldError(f"{path}[{i}]", "Invalid value: null is not a list item")])]
    if not isinstance(value, shape):
        return [FieldError(path, f"Invalid value: expected a string, got {_json_type(value)}")]
    return []


def flatten(existing: Sequence[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """The objects, with ``kind: List`` (what ``kubectl get -o yaml`` prints for several) unpacked."""
    for obj in existing:
        if not isinstance(obj, dict):
            continue
        kind = obj.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(obj.get("items"), list):
            yield from flatten(obj["items"])
        else:
            yield obj


def kubectl_get(resource: str, namespace: str, name: str) -> str:
    """The command that prints the live object the renderer needs as ``existing``."""
    return f"kubectl get {resource} -n {namespace} {name} -o yaml"


def _matches(obj: dict[str, Any], api_group: str, kind: str, name: str, namespace: str) -> bool:
    if obj.get("kind") != kind or str(obj.get("apiVersion", "")).split("/")[0] != api_group.split("/")[0]:
        return False
    meta = obj.get("metadata")
    return isinstance(meta, dict) and meta.get("name") == name and meta.get("namespace", namespace) == namespace


def find_target(existing: Sequence[dict[str, Any]], api_group: str, kind: str, name: str, namespace: str,
                hint: str, shape: dict[str, Any] | None = None) -> dict[str, Any]:
    """The object of that kind, name and namespace, or Refused(TargetNotFound) saying how to supply it.

    With ``shape``, an object whose fields have the wrong types is InvalidInput naming them.
    """
    for obj in flatten(existing):
        if _matches(obj, api_group, kind, name, namespace):
            errors = shape_errors(obj, shape or {}, "")
            if errors:
                where = f"the existing {kind} {namespace}/{name}"
                raise InvalidInput(FieldError(f"{where}: {e.path.lstrip('.')}", e.message) for e in errors)
            return obj
    raise Refused(
        "TargetNotFound",
        f"{kind} {namespace}/{name} was not found among the existing objects; kaudit adapts its "
        f"change to what the {kind} already has, so it needs the live object: {hint}",
    )


def matches_target(obj: dict[str, Any], target: AgentTarget) -> bool:
    return _matches(obj, target.api_group, target.kind, target.name, target.namespace)


def pick_target(sources: Sequence[tuple[str, Sequence[Any]]], target: AgentTarget) -> dict[str, Any]:
    """The one object ``target`` names among files of many objects (``helm template`` output, a List).

    ``sources`` are (file name, documents). Absent: Refused(TargetNotFound) naming the files and
    the objects of that kind they do hold; there more than once: InvalidInput naming where.
    """
    found: list[tuple[str, int, dict[str, Any]]] = []
    same_kind: list[str] = []
    for path, documents in sources:
        for number, obj in enumerate(flatten(documents), start=1):
            if matches_target(obj, target):
                found.append((path, number, obj))
            elif obj.get("kind") == target.kind:
                meta = obj.get("metadata")
                meta = meta if isinstance(meta, dict) else {}
                same_kind.append(f"{meta.get('namespace', '?')}/{meta.get('name', '?')}")
    files = ", ".join(path for path, _ in sources)
    if not found:
        held = f"it holds {target.kind} {', '.join(same_kind)}" if same_kind else f"it holds no {target.kind}"
        raise Refused(
            "TargetNotFound",
            f"{target.text} is not in --existing {files} ({held}); set spec.agent.namespace and the "
            f"{target.kind}'s name in spec.agent to your agent, or pass the output of "
            f"'{kubectl_get(target.resource, target.namespace, target.name)}'",
        )
    if len(found) > 1:
        where = ", ".join(f"object {number} of {path}" for path, number, _ in found)
        raise InvalidInput([FieldError(files, f"{target.text} is there {len(found)} times ({where}); kaudit "
                                              f"adapts to one live object: pass one of them")])
    return found[0][2]


def refuse_if_claimed(live: dict[str, Any], collection: str, where: str) -> None:
    """One agent serves one collection: refuse an object another AuditCollection already configures."""
    claimed = ((live.get("metadata") or {}).get("labels") or {}).get(COLLECTION_LABEL)
    if claimed and claimed != collection:
        raise Refused("TargetClaimed", f"{where} is already configured by AuditCollection {claimed!r}; "
                                       f"one agent can serve one collection")
