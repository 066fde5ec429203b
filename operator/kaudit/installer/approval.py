"""The installer installs only what the cluster-scoped AuditCollection approves.

The policy reaches the node through a ConfigMap in the operator namespace, which anyone with
namespace-level rights there can edit. The operator publishes the hash of the policy it rendered in
``status.policy.fullHash`` of the cluster-scoped AuditCollection, which no namespace-level right can
write; it publishes it *before* it applies the ConfigMap, so a legitimate change is approved by the
time any kubelet can hand it to an installer. Before writing anything, the installer reads the
AuditCollection by name (a fresh GET: a cached approval would let an old, approved-once policy be
put back after a newer one was approved) and accepts the candidate only when its content hash is
that one. Anything else is refused: the installed file stays byte for byte, and the node report
names the refused hash and why (docs/security.md).

The hash is :func:`kaudit.policy.content_hash`: the sha256 of the file after its header comments,
which is what kube-apiserver reads (comments change nothing it does).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Mapping

from kaudit.errors import KauditError
from kaudit.installer.api import ApiClient
from kaudit.k8s.resources import AUDIT_COLLECTIONS


class NotApproved(KauditError):
    """The candidate is not the policy the AuditCollection approves: nothing is written."""

    def __init__(self, candidate_hash: str, reason: str):
        self.candidate_hash = candidate_hash
        self.reason = reason
        super().__init__(f"refused policy {candidate_hash[:12]}: {reason}")


class ApprovalUnavailable(KauditError):
    """The AuditCollection could not be read: nothing is written, and the next round asks again."""


def candidate_hash(content: bytes) -> str:
    """The content hash the operator publishes, for any bytes (non-UTF-8 can match nothing)."""
    from kaudit.policy.document import content_hash

    try:
        return content_hash(content.decode("utf-8"))
    except UnicodeDecodeError:
        return hashlib.sha256(content).hexdigest()


def approved_hash(collection: Mapping[str, Any] | None) -> str:
    """``status.policy.fullHash`` of an AuditCollection object ("" when it approves nothing)."""
    status = (collection or {}).get("status") or {}
    return str((status.get("policy") or {}).get("fullHash") or "")


def refusal_reason(name: str, collection: Mapping[str, Any] | None, candidate: str) -> str | None:
    """Why ``candidate`` is not approved by AuditCollection ``name`` (None when it is)."""
    if collection is None:
        return f"AuditCollection {name} does not exist, so no policy is approved"
    approved = approved_hash(collection)
    if not approved:
        return f"AuditCollection {name} approves no policy yet (status.policy.fullHash is empty)"
    if candidate != approved:
        return (f"not the policy AuditCollection {name} approves (status.policy.fullHash {approved[:12]}); "
                f"the policy source was changed outside the AuditCollection")
    return None


class Approval:
    """Checks a candidate against the AuditCollection, read afresh each time."""

    def __init__(self, collection: str, fetch: Callable[[str], Mapping[str, Any] | None]):
        self.collection = collection
        self._fetch = fetch  # name -> the object, None when it does not exist; raises when unreadable

    def check(self, content: bytes) -> None:
        """Return when ``content`` is approved; raise NotApproved or ApprovalUnavailable otherwise."""
        candidate = candidate_hash(content)
        try:
            live = self._fetch(self.collection)
        except Exception as exc:  # the API being away must not stop the installer, nor let anything in
            raise ApprovalUnavailable(f"cannot read AuditCollection {self.collection} to check the policy's "
                                      f"approval: {_one_line(exc)}") from None
        reason = refusal_reason(self.collection, live, candidate)
        if reason is not None:
            raise NotApproved(candidate, reason)


def _one_line(exc: Exception) -> str:
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    if status:
        return f"{status} {reason or ''}".strip()
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def api_fetch(client: ApiClient) -> Callable[[str], Mapping[str, Any] | None]:
    """GET an AuditCollection by name with the pod's service account (kaudit.installer.api)."""

    def fetch(name: str) -> Mapping[str, Any] | None:
        found: Mapping[str, Any] | None = client.get(AUDIT_COLLECTIONS.path(name=name))
        return found

    return fetch
