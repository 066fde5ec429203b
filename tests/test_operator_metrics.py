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


# --- a strict reading of the text exposition format ----------------------------------------------
# Rules from the Prometheus "Exposition formats" documentation (text format 0.0.4): "# HELP name
# text" and "# TYPE name type" precede the family's samples, at most once each; a sample line is
# name{label="value",...} value; counters are named *_total; a histogram has *_bucket samples with
# an "le" label in increasing order whose counts are cumulative (never decreasing), ending in
# le="+Inf", whose count equals *_count, plus *_sum.

import math  # noqa: E402
import re  # noqa: E402

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')


def parse_exposition(text: str) -> dict[str, dict]:
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            keyword, name, rest = line[2:6], line.split(" ")[2], line.split(" ", 3)[3]
            family = families.setdefault(name, {"help": None, "type": None, "samples": []})
            assert family[keyword.lower()] is None, f"second {keyword} for {name}"
            assert not family["samples"], f"{keyword} after samples of {name}"
            family[keyword.lower()] = rest
            current = name
            continue
        assert not line.startswith("#") and line.strip(), f"unexpected line {line!r}"
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        float(value)  # "+Inf", "NaN" and plain floats parse
        suffixes = ("_bucket", "_sum", "_count") if families[current]["type"] == "histogram" else ("",)
        assert any(name == current + s for s in suffixes), f"{name} outside its family {current}"
        families[current]["samples"].append((name, dict(LABEL.findall(labels or "")), float(value)))
    return families


def check_families(families: dict[str, dict]) -> None:
    for name, family in families.items():
        assert family["help"] and family["type"] in ("counter", "gauge", "histogram"), name
        if family["type"] == "counter":
            assert name.endswith("_total"), name
        if family["type"] != "histogram":
            continue
        series: dict[tuple, list] = {}
        for sample, labels, value in family["samples"]:
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            series.setdefault(key, []).append((sample, labels.get("le"), value))
        for key, samples in series.items():
            buckets = [(float(le), v) for s, le, v in samples if s == name + "_bucket"]
            assert buckets and buckets[-1][0] == math.inf, f"{name}{key}: no +Inf bucket"
            assert [b for b, _ in buckets] == sorted(b for b, _ in buckets), f"{name}{key}: le out of order"
            assert all(a <= b for (_, a), (_, b) in zip(buckets, buckets[1:])), f"{name}{key}: not cumulative"
            counts = [v for s, _, v in samples if s == name + "_count"]
            assert counts == [buckets[-1][1]], f"{name}{key}: _count differs from the +Inf bucket"
            assert len([s for s, _, _ in samples if s == name + "_sum"]) == 1


def test_exposition_parses_strictly_before_and_after_reconciles():
    metrics = Metrics()
    check_families(parse_exposition(metrics.render()))  # nothing observed yet: families only
    for seconds in (0.001, 0.03, 0.03, 0.7, 30.0):
        metrics.reconciled("create", "ready", seconds, 3)
    metrics.reconciled("drift", "error", 0.2, 0)
    metrics.request("GET", "/api/v1/nodes", 0, 0.01)
    families = parse_exposition(metrics.render())
    check_families(families)
    assert families["kaudit_reconcile_duration_seconds"]["type"] == "histogram"
    create = [(labels["le"], v) for s, labels, v in families["kaudit_reconcile_duration_seconds"]["samples"]
              if s.endswith("_bucket") and labels["trigger"] == "create"]
    # Five observations: 0.001 and both 0.03 fall at or under 0.05; 30 s only under +Inf.
    assert dict(create)["0.05"] == 3 and dict(create)["+Inf"] == 5 and dict(create)["10.0"] == 4


def test_the_strict_reader_catches_a_non_cumulative_histogram():
    bad = ("# HELP h_seconds x\n# TYPE h_seconds histogram\n"
           'h_seconds_bucket{le="1"} 2\nh_seconds_bucket{le="+Inf"} 1\nh_seconds_sum 1\nh_seconds_count 1\n')
    try:
        check_families(parse_exposition(bad))
    except AssertionError:
        return
    raise AssertionError("a decreasing bucket count was accepted")
