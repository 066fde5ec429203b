"""The per-node report: one ``coordination.k8s.io/v1`` Lease per node, in the operator namespace.

Why a Lease (the full argument is in docs/delivery.md):

- the installer's Role grants only ``create`` and ``patch`` on Leases in the operator namespace,
  where nothing else kaudit relies on is a Lease. A compromised node can at worst forge another
  node's report (a wrong status line). The alternatives are worse: ``patch`` on ConfigMaps would
  let it rewrite the policy ConfigMap every other node installs (``create`` cannot be limited by
  ``resourceNames`` and node names are not known when the Role is written); ``patch`` on Pods
  would let it change a container image in the namespace.
- a Lease is the object Kubernetes itself uses for per-node heartbeats (``renewTime``), so
  staleness is visible without inventing a field;
- its owner is the installer pod (name and uid from the downward API): when the pod goes (node
  removed, DaemonSet deleted with its AuditCollection) the garbage collector removes the report.

The report carries annotations, so the operator reads it without a schema of its own.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kaudit.api.spec import INSTALLER_COMPONENT as COMPONENT
from kaudit.installer.api import ApiClient
from kaudit.k8s.resources import FIELD_MANAGER, LEASES
from kaudit.render.common import labels

log = logging.getLogger("kaudit.installer")

ANNOTATION_NODE = "kaudit.dev/node"
ANNOTATION_HASH = "kaudit.dev/installed-hash"
ANNOTATION_INSTALLED_AT = "kaudit.dev/installed-at"
ANNOTATION_POLICY_FILE = "kaudit.dev/policy-file"
ANNOTATION_ERROR = "kaudit.dev/error"
# The latest candidate the installer refused because the AuditCollection does not approve it
# (kaudit.installer.approval), while it lasts: its content hash, why, and since when.
ANNOTATION_REFUSED_HASH = "kaudit.dev/refused-hash"
ANNOTATION_REFUSED_REASON = "kaudit.dev/refused-reason"
ANNOTATION_REFUSED_AT = "kaudit.dev/refused-at"
# The installed policy's lint warnings, one per line (what `kaudit policy lint` says of it).
ANNOTATION_WARNINGS = "kaudit.dev/warnings"
MAX_WARNINGS_CHARS = 16 * 1024  # annotations share 256 KiB per object; a report stays small
MAX_NAME = 253


def report_name(collection: str, node: str) -> str:
    """``kaudit-<collection>-policy-<node>``, shortened with a digest when it would exceed 253 chars."""
    name = f"kaudit-{collection}-policy-{node}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:MAX_NAME - 11].rstrip('.-')}-{digest}"


def micro_time(moment: datetime) -> str:
    """RFC 3339 with microseconds, UTC: the format of a Lease's MicroTime fields."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Identity:
    """Who reports: from the downward API (NODE_NAME, POD_NAMESPACE, POD_NAME, POD_UID)."""

    collection: str
    node: str
    namespace: str
    pod_name: str = ""
    pod_uid: str = ""


def report_lease(
    identity: Identity,
    *,
    policy_file: str,
    installed_hash: str,
    installed_at: datetime | None,
    error: str,
    now: datetime,
    lease_seconds: int,
    refused_hash: str = "",
    refused_reason: str = "",
    refused_at: datetime | None = None,
    warnings: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The server-side-apply body of the node's report."""
    metadata: dict[str, Any] = {
        "name": report_name(identity.collection, identity.node),
        "namespace": identity.namespace,
        # The DaemonSet's labels: the operator finds reports by kaudit.dev/collection.
        "labels": labels(identity.collection, COMPONENT),
        "annotations": {
            ANNOTATION_NODE: identity.node,
            ANNOTATION_POLICY_FILE: policy_file,
            ANNOTATION_HASH: installed_hash,
            ANNOTATION_INSTALLED_AT: micro_time(installed_at) if installed_at else "",
            ANNOTATION_ERROR: error,
            ANNOTATION_REFUSED_HASH: refused_hash,
            ANNOTATION_REFUSED_REASON: refused_reason,
            ANNOTATION_REFUSED_AT: micro_time(refused_at) if refused_at else "",
            ANNOTATION_WARNINGS: "\n".join(warnings)[:MAX_WARNINGS_CHARS],
        },
    }
    if identity.pod_name and identity.pod_uid:
        # No blockOwnerDeletion: setting it would need delete permission on the pod.
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": identity.pod_name, "uid": identity.pod_uid}
        ]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": identity.node,
            "leaseDurationSeconds": lease_seconds,
            "renewTime": micro_time(now),
        },
    }


class LeaseReporter:
    """Sends reports with the pod's service account; failures are logged and retried later."""

    def __init__(self, client: ApiClient) -> None:
        self._client = client

    def send(self, body: dict[str, Any]) -> bool:
        meta = body["metadata"]
        try:
            self._client.apply(LEASES.path(meta["namespace"], meta["name"]), body, field_manager=FIELD_MANAGER)
        except Exception as exc:  # the API being away must not stop the installer
            log.warning("cannot send the node report %s/%s: %s", meta["namespace"], meta["name"], exc)
            return False
        return True
