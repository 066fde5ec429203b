"""The benchmark log (bench/gen_events.py) is byte-exact kube-apiserver output, and the simulation's
figures on it are those of re-serializing each event the way kube-apiserver would write it."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

from kaudit.policy import PolicyOptions, compose_policy, load_policy
from kaudit.policy.evaluate import Evaluator
from kaudit.simulate import LoadedPolicy, PolicySource, simulate
from kaudit.simulate.sizes import strip_managed_fields

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import gen_events  # noqa: E402

REAL = Path(__file__).resolve().parent / "fixtures" / "kube-apiserver-audit.log"


def test_go_json_writes_what_kube_apiserver_wrote():
    # Escapes (<, >, &, U+2028, U+2029, control characters), non-ASCII, compactness: every real
    # line comes back byte for byte (json keeps the member order of the line).
    lines = REAL.read_bytes().splitlines(keepends=True)
    assert any(b"\\u0026" in line for line in lines) and any(b"\\u2028" in line for line in lines)
    for line in lines:
        assert (gen_events.go_json(json.loads(line)) + "\n").encode() == line


def _member_orders(value, path: str = "$"):
    """(path, member names in order) for every object in ``value``; list items share a path."""
    if isinstance(value, dict):
        yield path, list(value)
        for key, child in value.items():
            # Maps (labels, annotations, data, extra, fieldsV1...) are keyed by data, not by field.
            yield from _member_orders(child, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from _member_orders(item, f"{path}[]")


def _before(orders) -> dict[str, set[tuple[str, str]]]:
    pairs: dict[str, set[tuple[str, str]]] = {}
    for path, names in orders:
        pairs.setdefault(path, set()).update(itertools.combinations(names, 2))
    return pairs


def test_generated_members_come_in_kube_apiserver_order():
    # Wherever the real log has two members in one object, the generated log has them in the same
    # order (Go writes struct fields in declaration order, map keys sorted).
    real = _before(order for line in REAL.read_bytes().splitlines() for order in _member_orders(json.loads(line)))
    generated = _before(order for line in itertools.islice(gen_events.iter_lines(5), 4000)
                        for order in _member_orders(json.loads(line)))
    compared = 0
    for path, pairs in generated.items():
        known = real.get(path, set())
        for first, second in pairs:
            if (second, first) in known:
                raise AssertionError(f"{path}: {first!r} before {second!r}, kube-apiserver writes the opposite")
            compared += (first, second) in known
    assert compared > 100


def test_generated_lines_are_go_compact():
    for line in itertools.islice(gen_events.iter_lines(3), 3000):
        assert gen_events.go_json(json.loads(line)) + "\n" == line
        assert "<" not in line and ">" not in line and "&" not in line


def _loaded(text: str, label: str) -> LoadedPolicy:
    return LoadedPolicy(load_policy(text).policy, PolicySource(label, "0" * 64))


def test_simulated_bytes_equal_reserializing_each_event(tmp_path):
    # The oracle: for each event, the policy's decision (the evaluator on the parsed dict) and the
    # event kube-apiserver would write at that level, re-serialized with Go's encoding. The
    # simulation groups events and sums spans instead; both must give the same bytes per rule.
    path = tmp_path / "audit.log"
    gen_events.generate(str(path), 0.4, seed=11)
    text = compose_policy(PolicyOptions(profile="AllRequestBodies")).text
    evaluator = Evaluator(load_policy(text).policy)
    expected: dict = {}
    sources: dict = {}
    for line in path.read_bytes().splitlines():
        event = json.loads(line)
        decision = evaluator.evaluate_event(event)
        if decision.level == "None" or event["stage"] in decision.omit_stages:
            continue
        kept = dict(event, level=decision.level)
        if decision.level == "Metadata":
            kept.pop("requestObject", None)
        if decision.level != "RequestResponse":
            kept.pop("responseObject", None)
        if decision.omit_managed_fields:
            for key in ("requestObject", "responseObject"):
                if key in kept and not (key == "requestObject" and event["verb"] == "patch"):
                    kept[key] = strip_managed_fields(kept[key])
        size = len(gen_events.go_json(kept).encode()) + 1
        expected[decision.rule] = expected.get(decision.rule, 0) + size
        ref = event.get("objectRef") or {}
        label = ref.get("resource", "") + (f".{ref['apiGroup']}" if ref.get("apiGroup") else "") + (
            f"/{ref['subresource']}" if ref.get("subresource") else "") if ref.get("resource") else \
            event["requestURI"].split("?")[0]
        source = (event["user"]["username"], event["verb"], label)
        sources[source] = sources.get(source, 0) + size
    doc = simulate(_loaded(text, "AllRequestBodies"), [str(path)], top=10)
    rules = doc["policy"]["rules"]
    assert {i if i < len(rules) - 1 else None: r["bytes"] for i, r in enumerate(rules) if r["bytes"]} == expected
    assert any(r["bytes"] for r in rules[:-1])
    heaviest = sorted(sources.items(), key=lambda item: -item[1])[:10]
    shown = [((t["user"], t["verb"], t["resource"]), t["bytes"]) for t in doc["policy"]["topSources"]["entries"]]
    assert sorted(shown, key=lambda item: -item[1]) == heaviest or [b for _, b in shown] == [b for _, b in heaviest]
