"""The /metrics endpoint and the text exposition format."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from kaudit.reconcile.metrics import Metrics
from kaudit.reconcile.server import CONTENT_TYPE, metrics_app


def test_exposition_lists_counters_and_a_cumulative_histogram():
    metrics = Metrics()
    metrics.reconciled("create", "ready", 0.03, 9)
    metrics.reconciled("drift", "error", 2.0, 0)
    metrics.request("PATCH", "/api/v1/namespaces/a/configmaps/b", 200, 0.01)
    text = metrics.render()
    assert 'kaudit_reconciles_total{trigger="create",result="ready"} 1' in text
    assert 'kaudit_reconcile_errors_total{trigger="drift"} 1' in text
    assert 'kaudit_reconcile_errors_total{trigger="create"} 0' in text
    assert 'kaudit_writes_total{trigger="create"} 9' in text
    # Buckets are cumulative: 0.03 s is under 0.05 but over 0.025 (Prometheus histogram semantics).
    assert 'kaudit_reconcile_duration_seconds_bucket{trigger="create",le="0.025"} 0' in text
    assert 'kaudit_reconcile_duration_seconds_bucket{trigger="create",le="0.05"} 1' in text
    assert 'kaudit_reconcile_duration_seconds_bucket{trigger="drift",le="+Inf"} 1' in text
    assert 'kaudit_api_requests_total{method="PATCH",code="200"} 1' in text
    # Every sample line belongs to a declared metric family.
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    for line in text.splitlines():
        if not line.startswith("#"):
            name = line.split("{")[0]
            assert any(name == f or name.startswith(f + "_") for f in families), line


async def test_metrics_endpoint_serves_the_text_format():
    metrics = Metrics()
    metrics.reconciled("resume", "ready", 0.1, 0)
    async with TestClient(TestServer(metrics_app(metrics))) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE
        assert 'kaudit_reconciles_total{trigger="resume",result="ready"} 1' in await response.text()
