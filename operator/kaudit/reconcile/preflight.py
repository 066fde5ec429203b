"""What ``kaudit run`` checks before it hands over to kopf.

kopf with a peering name pauses every watch and handler until the ClusterKopfPeering object exists,
and says so only at DEBUG: an operator started without it looks healthy and does nothing, ever.
``kaudit run`` asks once before starting and refuses with one line that says what to create; a
peering object deleted later is logged as a warning by ``Runtime.is_active`` (handlers.py).
"""

from __future__ import annotations

from typing import Any

from kaudit.k8s import resources as r
from kaudit.k8s.client import ApiClient, ApiError, Connection, RetryPolicy

# A few quick tries: the check runs before the operator, so it must not hang a pod's start.
PREFLIGHT_RETRY = RetryPolicy(attempts=3, first_delay=0.2, max_delay=1.0)


def missing_peering_message(name: str) -> str:
    return (f'ClusterKopfPeering "{name}" not found, and kopf would pause this replica until it exists: '
            f"create it (kubectl apply -f crds/kopf-peering.yaml, then a ClusterKopfPeering named {name}; "
            "the Helm chart and manifests/ do both) or run a single replica with --standalone")


async def peering_problem(info: Any, name: str) -> str | None:
    """None when the peering object ``name`` exists; otherwise one sentence saying what to do."""
    client = ApiClient(Connection.from_connection_info(info, force_close=True), retry=PREFLIGHT_RETRY)
    try:
        body = await client.get(r.PEERINGS, None, name)  # a missing CRD is a 404 too
    except ApiError as exc:
        return f'cannot read ClusterKopfPeering "{name}": {exc}'
    finally:
        await client.close()
    return None if body is not None else missing_peering_message(name)
