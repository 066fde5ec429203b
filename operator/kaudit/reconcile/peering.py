"""Whether this replica is the active one among peering replicas.

kopf pauses its own watches and handlers while a live peer with a higher (or the same) priority
is in the ClusterKopfPeering object, but it knows nothing of kaudit's own background tasks (the
resync, the operator-namespace watch, the node-report rechecks). Those would go on working from an
index kopf stopped updating, and re-apply a stale spec against the active replica. They ask here
first, with kopf's own rule (a peer counts while lastseen + lifetime lies ahead).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PeeringIdentity:
    name: str  # the ClusterKopfPeering object
    priority: int
    identity: str  # this replica's key in the object's status (passed to kopf.operator)


def _parse_time(text: str) -> datetime.datetime | None:
    try:
        stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=datetime.timezone.utc)


def outranked(peering: dict[str, Any] | None, me: PeeringIdentity, now: datetime.datetime) -> bool:
    """Whether kopf would pause this replica: another live peer has a priority >= its own."""
    peers: dict[str, Any] = (peering or {}).get("status") or {}
    for identity, info in peers.items():
        if identity == me.identity or not isinstance(info, dict):
            continue
        lastseen = _parse_time(str(info.get("lastseen", "")))
        if lastseen is None:
            continue
        alive = lastseen + datetime.timedelta(seconds=int(info.get("lifetime", 60) or 0)) > now
        if alive and int(info.get("priority", 0) or 0) >= me.priority:
            return True
    return False
