"""Finding the user's agent object among the ``existing`` objects handed to the renderer."""

from __future__ import annotations

from typing import Iterable, Sequence

from kaudit.errors import Refused
from kaudit.render.common import COLLECTION_LABEL


def flatten(existing: Sequence[dict]) -> Iterable[dict]:
    """The objects, with ``kind: List`` (what ``kubectl get -o yaml`` prints for several) unpacked."""
    for obj in existing:
        if not isinstance(obj, dict):
            continue
        if obj.get("kind") == "List" or (obj.get("kind", "").endswith("List") and "items" in obj):
            yield from flatten(obj.get("items") or [])
        else:
            yield obj


def find_target(existing: Sequence[dict], api_group: str, kind: str, name: str, namespace: str,
                hint: str) -> dict:
    """The object of that kind, name and namespace, or Refused(TargetNotFound) saying how to supply it."""
    for obj in flatten(existing):
        if obj.get("kind") != kind or str(obj.get("apiVersion", "")).split("/")[0] != api_group.split("/")[0]:
            continue
        meta = obj.get("metadata") or {}
        if meta.get("name") == name and meta.get("namespace", namespace) == namespace:
            return obj
    raise Refused(
        "TargetNotFound",
        f"{kind} {namespace}/{name} was not found among the existing objects; kaudit adapts its "
        f"change to what the {kind} already has, so it needs the live object: {hint}",
    )


def refuse_if_claimed(live: dict, collection: str, where: str) -> None:
    """One agent serves one collection: refuse an object another AuditCollection already configures."""
    claimed = ((live.get("metadata") or {}).get("labels") or {}).get(COLLECTION_LABEL)
    if claimed and claimed != collection:
        raise Refused("TargetClaimed", f"{where} is already configured by AuditCollection {claimed!r}; "
                                       f"one agent can serve one collection")
