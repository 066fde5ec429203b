"""Rule-aware replay (kaudit.detect.replay): signals per rule before and after a candidate policy,
noise hot spots, and the bytes each rule's events and bodies cost."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from kaudit.detect.loaders import rules_from_api
from kaudit.detect.pack import PACK, event, pack_entry, pack_rules
from kaudit.detect.replay import replay_events
from kaudit.policy import load_policy

FIXTURE = Path(__file__).parent / "fixtures" / "kube-apiserver-audit.log"
EVERYTHING = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n"
# Pods at Metadata, everything else with bodies: the body rules on pods go blind, the rest do not.
PODS_METADATA = ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
                 "- level: Metadata\n  resources: [{group: '', resources: [pods, pods/exec, pods/attach]}]\n"
                 "- level: RequestResponse\n")


def policy(text):
    return load_policy(text).policy


def by_name(document):
    return {rule["name"]: rule for rule in document["rules"]}


def test_signals_before_and_after_follow_the_levels_the_candidate_gives():
    events = [e for entry in PACK for e in entry.fires]
    document = replay_events(events, pack_rules(), policy(PODS_METADATA))
    rules = by_name(document)
    for entry in PACK:
        rule = rules[entry.rule["name"]]
        # Every example fires as recorded (RequestResponse); after, only the pod body rules lose it.
        assert rule["signals"]["before"] >= 1, entry.id
        pod_body = entry.needs == "Request" and entry.fires[0].get("objectRef", {}).get("resource") == "pods"
        assert (rule["signals"]["after"] == 0) is pod_body, entry.id
    assert document["underRecorded"] == 0 and document["events"] == len(events)


def test_hot_spots_name_the_identities_and_requests_that_raise_the_signals():
    burst = pack_entry("kaudit: many denied requests from one identity")
    quiet = [event("get", "configmaps", namespace="web", user="bob@example.com", code=403, decision="forbid",
                   time=f"2026-01-05T10:01:0{i}Z", seq=100 + i) for i in range(3)]
    events = sorted(list(burst.fires) + quiet, key=lambda e: e["requestReceivedTimestamp"])
    document = replay_events(events, [r for r in pack_rules() if r.name == burst.rule["name"]], policy(EVERYTHING))
    (rule,) = document["rules"]
    assert rule["signals"] == {"before": 1, "after": 1}
    assert rule["hotIdentities"] == [{"user": "mallory@example.com", "matches": 11, "signals": 1},
                                     {"user": "bob@example.com", "matches": 3, "signals": 0}]
    assert rule["hotRequests"][0] == {"request": "list secrets in shop", "matches": 11, "signals": 1}


def test_a_baseline_policy_decides_before():
    entry = pack_entry("kaudit: privileged pod created")
    rule = [r for r in pack_rules() if r.name == entry.rule["name"]]
    document = replay_events(list(entry.fires), rule, policy(EVERYTHING), baseline=policy(PODS_METADATA))
    assert document["rules"][0]["signals"] == {"before": 0, "after": 1}


def test_bytes_are_what_kube_apiserver_wrote_on_the_real_log():
    lines = FIXTURE.read_bytes().splitlines()
    events = [json.loads(line) for line in lines]
    rules = rules_from_api([
        {"name": "pods", "queries": [{"query": "@objectRef.resource:pods"}], "cases": [{"status": "info",
                                                                                         "condition": "a > 0"}]},
        {"name": "pod bodies", "queries": [{"query": "@objectRef.resource:pods @requestObject.kind:Pod"}],
         "cases": [{"status": "info", "condition": "a > 0"}]},
    ], "test")
    rules_doc = by_name(replay_events(events, rules, policy(EVERYTHING)))
    # Independent of kaudit: the pod events are picked by a plain read, and their sizes are the
    # lines' lengths and the raw spans of their request bodies as the apiserver wrote them.
    pod_lines = [line for line, e in zip(lines, events) if (e.get("objectRef") or {}).get("resource") == "pods"]
    assert pod_lines and rules_doc["pods"]["cost"]["bytesAfter"] == sum(len(line) for line in pod_lines)
    spans = [msgspec.json.decode(line, type=dict[str, msgspec.Raw]).get("requestObject") for line in pod_lines]
    with_body = [span for span, line in zip(spans, pod_lines) if span is not None and b'"kind":"Pod"' in bytes(span)]
    assert with_body
    cost = rules_doc["pod bodies"]["cost"]
    assert cost["reads"] == ["requestObject"] and cost["bodyEvents"] == len(with_body)
    assert cost["bodyBytes"] == sum(len(bytes(span)) for span in with_body)
    assert rules_doc["pods"]["cost"]["reads"] == [] and rules_doc["pods"]["cost"]["bodyBytes"] == 0


def test_events_recorded_below_the_candidates_level_are_counted():
    entry = pack_entry("kaudit: pod created on the node's network")
    low = [dict(e, level="Metadata") for e in entry.fires]
    for e in low:
        e.pop("requestObject")
    document = replay_events(low, pack_rules(), policy(EVERYTHING))
    assert document["underRecorded"] == len(low)


def test_policy_simulate_detections_reads_the_one_pass_of_standard_input(capsys, monkeypatch):
    """`kaudit policy simulate --detections`: the pack's examples on stdin, the Datadog profile as the
    candidate. A rule keeps its signal exactly when the profile's level for its example is enough
    for what it reads (derived here from the evaluator's levels, not from the replay)."""
    import io
    import sys
    from importlib import resources

    import jsonschema

    from kaudit.cli import main
    from kaudit.policy import PolicyOptions, compose_policy
    from kaudit.policy.evaluate import Evaluator
    from kaudit.policy.model import LEVEL_RANK

    events = sorted((e for entry in PACK for e in entry.fires), key=lambda e: e["requestReceivedTimestamp"])
    data = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code = main(["policy", "simulate", "--profile", "Datadog", "--events", "-", "--detections", "-o", "json"])
    out, _ = capsys.readouterr()
    assert code == 0
    document = json.loads(out)
    schema = json.loads(resources.files("kaudit.simulate").joinpath("report.schema.json").read_text())
    jsonschema.validate(document, schema)
    evaluator = Evaluator(policy(compose_policy(PolicyOptions(profile="Datadog")).text))
    rules = by_name(document["detection"])
    for entry in PACK:
        decisions = [evaluator.evaluate_event(e) for e in entry.fires]
        enough = all(d.level != "None" and LEVEL_RANK[d.level] >= LEVEL_RANK[entry.needs]
                     and "ResponseComplete" not in d.omit_stages for d in decisions)
        signals = rules[entry.rule["name"]]["signals"]
        assert signals["before"] >= 1 and (signals["after"] >= 1) == enough, entry.id
    assert not all(rule["signals"]["after"] for rule in rules.values())  # the profile blinds one at least


def test_an_eviction_in_a_kube_namespace_is_no_new_workload():
    # The replay of the generated benchmark log showed pods/eviction creates in kube-system raising
    # the kube-namespace rule: an eviction is a create of a subresource, not of a pod.
    entry = pack_entry("kaudit: pod or service account created in a kube- namespace")
    rule = [r for r in pack_rules() if r.name == entry.rule["name"]]
    eviction = event("create", "pods", namespace="kube-system", name="coredns-1", subresource="eviction", code=201)
    pod = event("create", "pods", namespace="kube-system", name="helper", code=201, seq=1)
    document = replay_events([eviction, pod], rule, policy(EVERYTHING))
    assert document["rules"][0]["signals"]["after"] == 1
    assert document["rules"][0]["hotRequests"] == [{"request": "create pods in kube-system", "matches": 1,
                                                    "signals": 1}]
