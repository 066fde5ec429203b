"""The benchmark's event generator (bench/gen_events.py) makes valid, varied, reproducible events."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

from kaudit.policy import PolicyOptions, compose_policy, load_policy
from kaudit.policy.evaluate import Evaluator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import gen_events  # noqa: E402


def test_generator_is_deterministic_and_produces_audit_events(tmp_path):
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    gen_events.generate(str(first), 0.5, seed=7)
    gen_events.generate(str(second), 0.5, seed=7)
    assert first.read_bytes() == second.read_bytes()
    assert first.stat().st_size >= 0.5 * 1024 * 1024

    events = [json.loads(line) for line in first.read_text().splitlines()]
    for event in events:
        assert event["apiVersion"] == "audit.k8s.io/v1" and event["kind"] == "Event"
        assert {"level", "auditID", "stage", "requestURI", "verb", "user", "requestReceivedTimestamp",
                "stageTimestamp"} <= set(event)
    assert len({e["user"]["username"] for e in events}) > 50
    assert {"get", "list", "watch", "create", "update", "patch", "delete"} <= {e["verb"] for e in events}
    refs = [e["objectRef"] for e in events if "objectRef" in e]
    assert len({r.get("namespace") for r in refs}) > 30
    assert {"log", "exec", "status", "token"} & {r.get("subresource") for r in refs}
    assert any("objectRef" not in e for e in events)  # non-resource requests
    assert any("requestObject" in e for e in events) and any("responseObject" in e for e in events)
    assert {"RequestReceived", "ResponseComplete"} <= {e["stage"] for e in events}

    plain = Evaluator(load_policy(compose_policy(PolicyOptions(self_audit=None)).text).policy)
    assert {plain.evaluate_event(e).level for e in events} == {"None", "Metadata", "Request"}
    # With the self-audit rules the generated log's cluster-wide RBAC writes (its only changes to
    # objects those rules name) gain their response bodies; nothing else changes level.
    evaluator = Evaluator(load_policy(compose_policy(PolicyOptions()).text).policy)
    raised = [e for e in events if evaluator.evaluate_event(e).level != plain.evaluate_event(e).level]
    assert raised and {(e["objectRef"]["resource"], e["verb"] in ("create", "update", "patch", "delete"),
                        evaluator.evaluate_event(e).level) for e in raised} <= {
        ("clusterroles", True, "RequestResponse"), ("clusterrolebindings", True, "RequestResponse")}


def test_other_seed_gives_other_events():
    a = list(itertools.islice(gen_events.iter_lines(1), 50))
    b = list(itertools.islice(gen_events.iter_lines(2), 50))
    assert a != b
