"""What the reconciler needs of the Kubernetes API: a small protocol, so it can be tested without one.

:class:`kaudit.k8s.client.ApiClient` is the implementation; it turns every HTTP failure into its
own :class:`~kaudit.k8s.client.ApiError` (retriable ones into ``TransientApiError``) in one place,
and those are the only errors the reconciler handles. A test gives the reconciler any object with
these methods (an in-memory dict of objects is enough).
"""

from __future__ import annotations

import builtins
from typing import Any, Mapping, Protocol

from kaudit.k8s.resources import Resource

JSON = dict[str, Any]


class Storage(Protocol):
    async def get(self, resource: Resource, namespace: str | None, name: str) -> JSON | None:
        """The object, or None when it does not exist."""

    async def list(self, resource: Resource, *, namespace: str | None = None,
                   label_selector: str | None = None) -> builtins.list[JSON]:
        """Objects of ``resource`` (an unknown resource lists as empty)."""

    async def apply(self, body: JSON, *, force: bool = True) -> JSON:
        """Server-side apply as kaudit's field manager; the object as stored."""

    async def merge_patch(self, resource: Resource, namespace: str | None, name: str, patch: Mapping[str, Any], *,
                          subresource: str | None = None, retry_conflicts: bool = True) -> JSON | None:
        """A JSON merge patch; None when the object is gone."""

    async def json_patch(self, resource: Resource, namespace: str | None, name: str,
                         operations: builtins.list[JSON]) -> JSON | None:
        """A JSON patch (RFC 6902); None when the object is gone."""

    async def delete(self, resource: Resource, namespace: str | None, name: str) -> bool:
        """Delete; False when it was already gone."""

    async def create(self, resource: Resource, namespace: str | None, body: JSON) -> JSON:
        """Create (kaudit creates only Events)."""
