"""Pure functions that turn an AuditCollection into Kubernetes objects (entry point: :func:`render`)."""

from kaudit.render.core import DEFAULT_NAMESPACE, render, render_collection
from kaudit.render.result import Rendered

__all__ = ["DEFAULT_NAMESPACE", "Rendered", "render", "render_collection"]
