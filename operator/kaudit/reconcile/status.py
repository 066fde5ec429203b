"""The AuditCollection status: conditions (kstatus conventions) and the minimal patch to reach it.

``Ready`` is the summary condition ``kubectl wait --for=condition=Ready`` and Argo CD / Flux health
checks read; every condition carries ``observedGeneration`` so a reader can tell a stale ``True``
from a current one. ``lastTransitionTime`` changes only when a condition's status changes, so
recomputing an unchanged status yields an identical dict and no write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

CONDITION_TYPES = ("Ready", "PolicyValid", "PolicyInstalled", "AgentConfigured")
TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


def summarise(conditions: Iterable[Condition]) -> Condition:
    """Ready: True when every other condition is True; otherwise the first one that is not."""
    for condition in conditions:
        if condition.status != TRUE:
            return Condition("Ready", FALSE, condition.reason, condition.message)
    return Condition("Ready", TRUE, "Reconciled", "The audit policy and the agent configuration are in place.")


def render_conditions(
    conditions: Iterable[Condition], *, previous: Iterable[dict], generation: int, now: str
) -> list[dict]:
    before = {c.get("type"): c for c in previous if isinstance(c, dict)}
    result = []
    for condition in conditions:
        old = before.get(condition.type) or {}
        changed = old.get("status") != condition.status
        result.append({
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message,
            "observedGeneration": generation,
            "lastTransitionTime": now if changed or not old.get("lastTransitionTime") else old["lastTransitionTime"],
        })
    return result


def status_patch(live: dict | None, desired: dict[str, Any]) -> dict | None:
    """A JSON merge patch for ``status`` that turns ``live`` into ``desired``; None if equal.

    Keys kaudit does not manage (kopf's own ``status.kopf``) are left alone.
    """
    live = live or {}
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if live.get(key) != value:
            patch[key] = value
    for key in MANAGED_STATUS_KEYS:
        if key in live and key not in desired:
            patch[key] = None
    return {"status": patch} if patch else None


MANAGED_STATUS_KEYS = ("observedGeneration", "conditions", "policy", "apiServerFlags", "warnings",
                       "nextSteps", "agent", "nodes")


def condition_changes(previous: Iterable[dict], current: list[dict]) -> list[dict]:
    """Conditions whose status or reason differ from before: what deserves an Event."""
    before = {c.get("type"): c for c in previous if isinstance(c, dict)}
    return [
        c for c in current
        if (before.get(c["type"]) or {}).get("status") != c["status"]
        or (before.get(c["type"]) or {}).get("reason") != c["reason"]
    ]
