"""How kaudit's kopf handlers turn API failures into kopf's retry signals."""

from __future__ import annotations

import kopf
import pytest

from kaudit.api.resource import CollectionResource
from kaudit.k8s.client import ApiError
from kaudit.reconcile import handlers
from kaudit.reconcile.runtime import API_ERROR_DELAY, State, operator_memo


class RefusingReconciler:
    """Stands in for the reconciler: the API refuses the hand-back (e.g. RBAC was removed)."""

    async def release(self, resource: CollectionResource) -> int:
        raise ApiError(403, "Forbidden", "daemonsets.apps \"datadog-agent\" is forbidden")


async def test_a_refused_release_is_retried_later_without_a_traceback():
    info = kopf.ConnectionInfo(server="https://kubernetes.invalid")
    memo = operator_memo(state=State(connection_info=info, client=object(), client_info=info,  # type: ignore[arg-type]
                                     reconciler=RefusingReconciler()))  # type: ignore[arg-type]
    body = {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection",
            "metadata": {"name": "cluster", "uid": "u"}, "spec": {"agent": {"mode": "DaemonSet"}}}
    # kopf logs a TemporaryError as one line and retries after its delay; any other exception is
    # logged with its traceback.
    with pytest.raises(kopf.TemporaryError) as caught:
        await handlers.deleted(body=kopf.Body(body), memo=memo)
    assert caught.value.delay == API_ERROR_DELAY
    assert "403 Forbidden" in str(caught.value)


def test_only_collections_that_patch_a_users_object_get_the_finalizer():
    def body(spec: dict) -> kopf.Body:
        return kopf.Body({"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection",
                          "metadata": {"name": "cluster", "uid": "u"}, "spec": spec})

    assert handlers.needs_release(body({"agent": {"mode": "DaemonSet"}}))
    assert handlers.needs_release(body({"agent": {"mode": "DatadogAgent"}}))
    # an invalid field elsewhere must not lose the hand-back of the user's object
    assert handlers.needs_release(body({"agent": {"mode": "DaemonSet", "namespace": "Not A Label"}}))
    assert not handlers.needs_release(body({"agent": {"mode": "Managed"}}))
    assert not handlers.needs_release(body({}))


async def test_startup_settings_filter_children_by_label_and_bound_every_watch():
    settings = kopf.OperatorSettings()
    memo = operator_memo()
    handlers.configure(settings=settings, memo=memo)
    assert settings.persistence.finalizer == "kaudit.dev/release"
    # kopf's last-handled state stays in this operator's memory: nothing of it is written.
    assert settings.persistence.diffbase_storage is memo.state.diffbase
    assert settings.watching.label_selectors[("", "v1", "configmaps")] == "kaudit.dev/collection"
    # A watch ends on the server's side first; the client's own limit only catches a dead connection.
    assert 0 < settings.watching.server_timeout < settings.watching.client_timeout
    assert settings.watching.connect_timeout
