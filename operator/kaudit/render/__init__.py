"""Pure functions that turn an AuditCollection into Kubernetes objects (entry point: :func:`render`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kaudit import lazy_exports

# Loaded on first use: the node installer imports kaudit.render.common (its labels) and never renders.
_EXPORTS = {"DEFAULT_NAMESPACE": "core", "render": "core", "render_collection": "core", "Rendered": "result"}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from kaudit.render.core import DEFAULT_NAMESPACE as DEFAULT_NAMESPACE
    from kaudit.render.core import render as render
    from kaudit.render.core import render_collection as render_collection
    from kaudit.render.result import Rendered as Rendered
