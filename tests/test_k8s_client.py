"""The API client against kmock: exact requests, retries with backoff, errors."""

from __future__ import annotations

import json

import kmock
from kmock import KubernetesError
import kopf
import pytest

from kaudit.k8s import resources as r
from kaudit.k8s.client import ApiClient, ApiError, Connection, RetryPolicy, TransientApiError
from kaudit.k8s.permissions import PERMISSIONS
from operator_support import ApplyEmulator

pytestmark = pytest.mark.kmock(cls=ApplyEmulator)


@pytest.fixture
async def client(kmock):
    kmock.resources.load_bundled()
    connection = Connection.from_connection_info(kopf.ConnectionInfo(server=str(kmock.url)), force_close=True)
    delays = []

    async def no_sleep(seconds: float) -> None:
        delays.append(seconds)

    api = ApiClient(connection, retry=RetryPolicy(attempts=4, first_delay=0.1, max_delay=1.0), sleep=no_sleep)
    api.delays = delays
    yield api
    await api.close()


async def test_apply_sends_server_side_apply_as_kaudit(kmock, client):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "ns"}, "data": {"k": "v"}}
    await client.apply(body)
    request = list(kmock)[-1]
    assert str(request.method) == "method.PATCH"
    assert request.url.path == "/api/v1/namespaces/ns/configmaps/a"
    assert request.headers["Content-Type"] == "application/apply-patch+yaml"
    assert request.params == {"fieldManager": "kaudit", "force": "true"}
    assert json.loads(request.body) == body


async def test_retriable_errors_are_retried_with_growing_delays(kmock, client):
    kmock["get /api/v1/namespaces/ns/configmaps/a"][:2] << KubernetesError(status=503, reason="Unavailable")
    kmock.objects["v1/configmaps", "ns", "a"] = {"metadata": {"name": "a", "namespace": "ns"}}
    assert (await client.get(r.CONFIG_MAPS, "ns", "a"))["metadata"]["name"] == "a"
    assert len(client.delays) == 2 and client.delays[0] <= 0.1 < client.delays[1] * 2


async def test_retries_give_up_with_a_transient_error(kmock, client):
    kmock["get"] << KubernetesError(status=429, reason="TooManyRequests")
    with pytest.raises(TransientApiError) as caught:
        await client.get(r.CONFIG_MAPS, "ns", "a")
    assert caught.value.status == 429
    assert len(client.delays) == 3  # four attempts, three waits


async def test_other_errors_are_not_retried_and_missing_objects_are_none(kmock, client):
    kmock.objects["v1/configmaps", "ns", "a"] = {"metadata": {"name": "a", "namespace": "ns"}}
    kmock["patch"] << KubernetesError(status=422, reason="Invalid", message="spec.x: bad")
    with pytest.raises(ApiError) as caught:
        await client.merge_patch(r.CONFIG_MAPS, "ns", "a", {"data": {}})
    assert (caught.value.status, caught.value.message) == (422, "spec.x: bad")
    assert client.delays == []
    assert await client.get(r.CONFIG_MAPS, "ns", "missing") is None


def test_every_resource_the_operator_touches_has_a_permission():
    granted = {(p.group, p.resource) for p in PERMISSIONS}
    for resource in (r.AUDIT_COLLECTIONS, r.NODES, r.PODS, r.EVENTS, *r.CHILD_RESOURCES,
                     *r.OPERATOR_NAMESPACE_CHILDREN):
        assert (resource.group, resource.plural) in granted, resource


async def test_watch_streams_events_of_one_namespace_by_label(kmock, client):
    # An event longer than aiohttp's line limit (512 KiB) still arrives whole.
    kmock.objects["rbac.authorization.k8s.io/v1/roles", "ops", "a"] = {
        "metadata": {"name": "a", "namespace": "ops", "labels": {"kaudit.dev/collection": "c"},
                     "annotations": {"note": "x" * 1_000_000}}}
    events = client.watch(r.ROLES, namespace="ops", label_selector="kaudit.dev/collection", timeout_seconds=60)
    first = await anext(events)
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "a")
    assert len(first["object"]["metadata"]["annotations"]["note"]) == 1_000_000
    await events.aclose()
    request = list(kmock)[-1]
    assert request.url.path == "/apis/rbac.authorization.k8s.io/v1/namespaces/ops/roles"
    assert dict(request.params) == {"watch": "true", "timeoutSeconds": "60", "labelSelector": "kaudit.dev/collection"}


async def test_a_refused_watch_raises_instead_of_streaming(kmock, client):
    kmock["get"] << KubernetesError(status=403, reason="Forbidden", message="roles is forbidden")
    with pytest.raises(ApiError) as caught:
        async for _ in client.watch(r.ROLES, namespace="ops"):
            pass
    assert caught.value.status == 403
