"""How kaudit's kopf handlers turn API failures into kopf's retry signals."""

from __future__ import annotations

import kopf
import pytest

from kaudit.k8s.client import ApiError
from kaudit.reconcile.handlers import API_ERROR_DELAY, Runtime, build_registry


class RefusingReconciler:
    """Stands in for the reconciler: the API refuses the hand-back (e.g. RBAC was removed)."""

    client = None

    async def release(self, collection: dict) -> int:
        raise ApiError(403, "Forbidden", "daemonsets.apps \"datadog-agent\" is forbidden")


def handler(registry: kopf.OperatorRegistry, handler_id: str):
    handlers = [h for h in registry._changing.get_all_handlers() if h.id.endswith(handler_id)]
    assert len(handlers) == 1, [h.id for h in registry._changing.get_all_handlers()]
    return handlers[0]


async def test_a_refused_release_is_retried_later_without_a_traceback():
    runtime = Runtime()
    runtime._reconciler = RefusingReconciler()  # type: ignore[assignment]
    deleted = handler(build_registry(runtime), "deleted")
    body = {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection",
            "metadata": {"name": "cluster", "uid": "u"}, "spec": {"agent": {"mode": "DaemonSet"}}}
    # kopf logs a TemporaryError as one line and retries after its delay; any other exception is
    # logged with its traceback.
    with pytest.raises(kopf.TemporaryError) as caught:
        await deleted.fn(body=kopf.Body(body))
    assert caught.value.delay == API_ERROR_DELAY
    assert "403 Forbidden" in str(caught.value)


async def test_startup_settings_filter_children_by_label_and_bound_every_watch():
    registry = build_registry(Runtime())
    settings = kopf.OperatorSettings()
    [configure] = [h for h in registry._activities.get_all_handlers() if h.id.endswith("configure")]
    configure.fn(settings=settings)
    assert settings.persistence.finalizer == "kaudit.dev/release"
    assert settings.watching.label_selectors[("", "v1", "configmaps")] == "kaudit.dev/collection"
    # A watch ends on the server's side first; the client's own limit only catches a dead connection.
    assert 0 < settings.watching.server_timeout < settings.watching.client_timeout
    assert settings.watching.connect_timeout
