"""Kubernetes Events about an AuditCollection (what kaudit changed, what it refused)."""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

from kaudit.k8s.client import ApiClient
from kaudit.k8s.permissions import CLUSTER_SCOPED_EVENTS_NAMESPACE
from kaudit.k8s.resources import EVENTS

NORMAL = "Normal"
WARNING = "Warning"
# The API server accepts an Event about a cluster-scoped object (involvedObject without a
# namespace) only in namespace "default" (or none): core/v1 Event validation in kubernetes
# (pkg/apis/core/validation/events.go, legacyValidateEvent) answers 422 for any other namespace.
# ``kubectl describe ac NAME`` lists Events in all namespaces by involvedObject name, kind and uid
# with an empty involvedObject.namespace, so it finds them there.


def event_namespace(involved: dict[str, Any]) -> str:
    """Where an Event about ``involved`` must be created: its own namespace, else "default"."""
    return (involved.get("metadata") or {}).get("namespace") or CLUSTER_SCOPED_EVENTS_NAMESPACE


def build_event(involved: dict[str, Any], *, type_: str, reason: str, message: str, now: datetime.datetime) -> dict[str, Any]:
    """A core/v1 Event about ``involved`` (for the cluster-scoped AuditCollection: in "default")."""
    meta = involved.get("metadata") or {}
    namespace = event_namespace(involved)
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
            **({"namespace": meta["namespace"]} if meta.get("namespace") else {}),
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


async def post_event(client: ApiClient, involved: dict[str, Any], *, type_: str, reason: str, message: str) -> None:
    body = build_event(involved, type_=type_, reason=reason, message=message,
                       now=datetime.datetime.now(datetime.timezone.utc))
    await client.create(EVENTS, body["metadata"]["namespace"], body)
