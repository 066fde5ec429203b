"""Kubernetes Events about an AuditCollection (what kaudit changed, what it refused)."""

from __future__ import annotations

import datetime
import hashlib

from kaudit.k8s.client import ApiClient
from kaudit.k8s.resources import EVENTS

NORMAL = "Normal"
WARNING = "Warning"


def build_event(involved: dict, *, namespace: str, type_: str, reason: str, message: str,
                now: datetime.datetime) -> dict:
    """A core/v1 Event; the AuditCollection is cluster-scoped, so its Events live in ``namespace``
    (the operator's own), which ``kubectl describe ac NAME`` still finds."""
    meta = involved.get("metadata") or {}
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = hashlib.sha256(f"{meta.get('uid')}{reason}{message}{now.isoformat()}".encode()).hexdigest()[:10]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name', 'kaudit')}.{digest}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "kaudit"},
        "reportingComponent": "kaudit.dev/operator",
        "reportingInstance": "kaudit",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post_event(client: ApiClient, involved: dict, *, namespace: str, type_: str, reason: str,
                     message: str) -> None:
    body = build_event(involved, namespace=namespace, type_=type_, reason=reason, message=message,
                       now=datetime.datetime.now(datetime.timezone.utc))
    await client.create(EVENTS, namespace, body)
