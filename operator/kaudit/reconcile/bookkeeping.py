"""Where kopf keeps its bookkeeping of AuditCollections, so that it costs no write of its own.

* The last handled state (kopf's "diff base"): kopf keeps the "essence" of the last handled object
  to tell a change of ``spec`` (an update) from an event that changed nothing it tracks. Its stock
  storages write it into the object (an annotation or ``status.kopf``): one more write on every
  create and every handled change, beside kaudit's own status patch. kaudit does not need it to
  survive a restart: its create, update and resume handlers all reconcile the whole collection, and
  a reconcile writes nothing that is already as rendered. Without a stored essence after a restart
  kopf calls every collection new, so the create handler reconciles it, as the resume handler
  would have (handlers.created tells the two apart for the metrics).
* Handler progress (retries after a failure): annotations under ``kaudit.dev/``, written only while
  a handler is being retried. Without kopf's "kopf-managed" marker annotation, which kopf adds to
  the patch of every first handling and which then was the only field of that patch. The marker
  lets other kopf-based operators skip these annotations; kaudit's own essence leaves them out by
  their prefix (``clear``), and no other operator handles AuditCollections.
"""

from __future__ import annotations

from typing import Any

import kopf

ANNOTATION_PREFIX = "kaudit.dev"


class MemoryDiffBaseStorage(kopf.DiffBaseStorage):
    """The last handled essence per object uid, in this process only; nothing is written."""

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, kopf.BodyEssence] = {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._essences.get(str(body.metadata.uid))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._essences[str(body.metadata.uid)] = essence

    def __contains__(self, uid: object) -> bool:
        """Whether kopf has handled the object with this uid (in this process)."""
        return uid in self._essences

    def forget(self, uid: str) -> None:
        """Drop a deleted object's essence (uids are never reused)."""
        self._essences.pop(uid, None)


class ProgressAnnotations(kopf.AnnotationsProgressStorage):
    """kopf's annotation progress storage under ``kaudit.dev/``, without its marker annotation."""

    def __init__(self) -> None:
        super().__init__(prefix=ANNOTATION_PREFIX)

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body, **_: Any) -> None:
        return None
