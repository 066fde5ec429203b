"""The simulation on a hand-built log: every figure is derived in the comments from the policy's
rules (tests/simulate_support.POLICY) and the eight events of ``scenario()``."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest

from kaudit.simulate import simulate
from simulate_support import EVERYTHING_METADATA, POLICY, event, line, loaded, managed, scenario, written_size


def _write(tmp_path, events, extra: bytes = b"", name: str = "audit.log"):
    path = tmp_path / name
    path.write_bytes(b"".join(line(ev) for ev in events) + extra)
    return str(path)


@pytest.fixture
def scenario_report(tmp_path):
    events = scenario()
    path = _write(tmp_path, events, extra=b"{not json\n\n[1,2]\n")
    return events, simulate(loaded(POLICY), [path])


def test_input_counts(scenario_report):
    events, doc = scenario_report
    inp = doc["input"]
    # 8 events; "{not json" and "[1,2]" are malformed; the empty line is blank, not malformed.
    assert inp["events"] == 8
    assert inp["malformedLines"] == 2
    assert inp["blankLines"] == 1
    assert inp["malformedExamples"][0].endswith("audit.log:9: not JSON: Expecting property name enclosed in "
                                                 "double quotes: line 1 column 2 (char 1)")
    assert inp["malformedExamples"][1].endswith("audit.log:11: not a JSON object")
    assert inp["recordedBytes"] == sum(len(line(ev)) for ev in events)
    # stages: e6 RequestReceived, e8 ResponseStarted, the other six ResponseComplete
    assert inp["eventsByStage"] == {"RequestReceived": 1, "ResponseComplete": 6, "ResponseStarted": 1}


def test_per_rule_figures(scenario_report):
    e = scenario_report[0]
    rules = scenario_report[1]["policy"]["rules"]
    # e2 at Metadata: both bodies dropped.
    s2 = written_size(e[1], "Metadata")
    # e3 at RequestResponse: nothing recorded to strip, the level name grows (under-recorded).
    s3 = written_size(e[2], "RequestResponse")
    # e4 at RequestResponse with omitManagedFields: managedFields leave both bodies.
    s4 = written_size(e[3], "RequestResponse", omit_managed_fields=True)
    # e5 at Request: the response body goes; its request body has no managedFields.
    s5 = written_size(e[4], "Request")
    assert [(r["index"], r["level"], r["matchedEvents"], r["writtenEvents"], r["omittedStageEvents"], r["bytes"],
             r["underRecordedEvents"]) for r in rules] == [
        (0, "None", 1, 0, 0, 0, 0),                    # e1
        (1, "Metadata", 1, 1, 0, s2, 0),               # e2
        (2, "RequestResponse", 3, 2, 1, s3 + s4, 1),   # e3, e4 written; e8 ResponseStarted omitted; e3 flagged
        (3, "Request", 2, 1, 1, s5, 0),                # e5 written; e6 RequestReceived omitted (policy level)
        (None, "None", 1, 0, 0, 0, 0),                 # e7: no rule matched
    ]
    # The oracle agrees with hand arithmetic: each of e4's bodies carries the member
    #   ,"managedFields":[{"manager":"kubectl","operation":"Update","fieldsV1":{"f:data":{"f:k":{}}}}]
    # the value: [{ + "manager":"kubectl" (19) + , + "operation":"Update" (20) + ,
    #            + "fieldsV1":{"f:data":{"f:k":{}}} (32) + }] = 2 + 19 + 1 + 20 + 1 + 32 + 2 = 77,
    # the member: comma 1 + "managedFields": 16 + 77 = 94 bytes; two bodies: 188 bytes.
    assert len(json.dumps(managed("x")["managedFields"], separators=(",", ":"))) == 77
    assert written_size(e[3], "RequestResponse") - s4 == 188


def test_levels_dropped_and_totals(scenario_report):
    e, doc = scenario_report
    policy = doc["policy"]
    s2 = written_size(e[1], "Metadata")
    s3 = written_size(e[2], "RequestResponse")
    s4 = written_size(e[3], "RequestResponse", omit_managed_fields=True)
    s5 = written_size(e[4], "Request")
    assert policy["levels"] == {
        "Metadata": {"events": 1, "bytes": s2, "underRecordedEvents": 0},
        "Request": {"events": 1, "bytes": s5, "underRecordedEvents": 0},
        "RequestResponse": {"events": 2, "bytes": s3 + s4, "underRecordedEvents": 1},
    }
    assert policy["totals"] == {"events": 4, "bytes": s2 + s3 + s4 + s5, "underRecordedEvents": 1,
                                "underRecordedBytes": s3}
    # Dropped: e1 and e7 at level None, e6 and e8 by omitted stages; recorded bytes are their lines.
    assert policy["dropped"] == {
        "levelNone": {"events": 2, "recordedBytes": len(line(e[0])) + len(line(e[6]))},
        "omittedStages": {
            "RequestReceived": {"events": 1, "recordedBytes": len(line(e[5]))},
            "ResponseStarted": {"events": 1, "recordedBytes": len(line(e[7]))},
        },
    }
    assert any("under-recorded: 1 event(s)" in w and "lower bound" in w for w in doc["warnings"])
    # The input holds a RequestReceived event (e6), so no stage is reported as unrecorded.
    assert policy["unrecordedStages"] == {}


def test_exposure(scenario_report):
    doc = scenario_report[1]
    # configmaps are sensitive (the engine's list). e3 (get at RequestResponse) would log the response
    # body; e4 (update at RequestResponse) both bodies. e2 (secrets) is at Metadata: nothing exposed.
    assert doc["policy"]["exposure"] == {
        "events": 2,
        "entries": [
            {"resource": "configmaps", "verb": "get", "user": "bob", "level": "RequestResponse",
             "bodies": "response", "events": 1},
            {"resource": "configmaps", "verb": "update", "user": "bob", "level": "RequestResponse",
             "bodies": "request+response", "events": 1},
        ],
    }


def test_a_failed_read_exposes_no_response_body(tmp_path):
    # kube-apiserver answers a refused or missing read with a Status (responsewriters.ErrorNegotiated),
    # so RequestResponse logs that Status, not the Secret. A refused create still logs its request body
    # (create.go records it before admission and storage can fail).
    everything_rr = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n"
    events = [
        event(1, "RequestResponse", "ResponseComplete", "get", "eve", resource="secrets", namespace="a", name="s",
              code=403, response={"kind": "Status", "code": 403}),
        event(2, "RequestResponse", "ResponseComplete", "get", "eve", resource="secrets", namespace="a", name="s",
              code=200, response={"kind": "Secret"}),
        event(3, "RequestResponse", "ResponseComplete", "create", "eve", resource="secrets", namespace="a",
              code=422, request={"kind": "Secret"}, response={"kind": "Status", "code": 422}),
    ]
    doc = simulate(loaded(everything_rr), [_write(tmp_path, events)])
    # e2 exposes its response; e3 its request only; e1 nothing.
    assert doc["policy"]["exposure"] == {
        "events": 2,
        "entries": [
            {"resource": "secrets", "verb": "create", "user": "eve", "level": "RequestResponse",
             "bodies": "request", "events": 1},
            {"resource": "secrets", "verb": "get", "user": "eve", "level": "RequestResponse",
             "bodies": "response", "events": 1},
        ],
    }


def test_top_sources(scenario_report):
    e, doc = scenario_report
    top = doc["policy"]["topSources"]
    assert top["exact"] is True
    expected = sorted([
        ("bob", "update", "configmaps", written_size(e[3], "RequestResponse", omit_managed_fields=True)),
        ("bob", "get", "configmaps", written_size(e[2], "RequestResponse")),
        ("carol", "create", "deployments.apps", written_size(e[4], "Request")),
        ("alice", "create", "secrets", written_size(e[1], "Metadata")),
    ], key=lambda row: -row[3])
    assert [(t["user"], t["verb"], t["resource"], t["bytes"]) for t in top["entries"]] == expected


def test_baseline_comparison(tmp_path):
    events = scenario()
    path = _write(tmp_path, events)
    doc = simulate(loaded(POLICY, "candidate"), [path], loaded(EVERYTHING_METADATA, "baseline"))
    # The baseline logs all eight events at Metadata (no stage omitted).
    base_bytes = sum(written_size(ev, "Metadata") for ev in events)
    cand_bytes = (written_size(events[1], "Metadata") + written_size(events[2], "RequestResponse")
                  + written_size(events[3], "RequestResponse", omit_managed_fields=True)
                  + written_size(events[4], "Request"))
    comparison = doc["comparison"]
    assert comparison["bytes"]["baseline"] == base_bytes
    assert comparison["bytes"]["candidate"] == cand_bytes
    assert comparison["bytes"]["changePercent"] == round((cand_bytes - base_bytes) * 100 / base_bytes, 2)
    assert comparison["events"] == {"baseline": 8, "candidate": 4, "change": -4, "changePercent": -50.0}
    # Level changes per (user, verb, resource): e2 stays Metadata; the other seven change.
    changes = {(c["user"], c["verb"], c["resource"], c["from"], c["to"]): (c["events"], c["bytesChange"])
               for c in comparison["levelChanges"]["entries"]}
    assert changes == {
        ("system:anonymous", "get", "/healthz", "Metadata", "None"): (1, -written_size(events[0], "Metadata")),
        ("bob", "get", "configmaps", "Metadata", "RequestResponse"):
            (1, written_size(events[2], "RequestResponse") - written_size(events[2], "Metadata")),
        # e4 written at RequestResponse; e8 (a watch) changes level too but its stage is omitted: 0 bytes.
        ("bob", "update", "configmaps", "Metadata", "RequestResponse"):
            (1, written_size(events[3], "RequestResponse", omit_managed_fields=True)
             - written_size(events[3], "Metadata")),
        ("bob", "watch", "configmaps", "Metadata", "RequestResponse"): (1, -written_size(events[7], "Metadata")),
        # e5 written at Request, e6 (RequestReceived) omitted by the candidate: two events, one group.
        ("carol", "create", "deployments.apps", "Metadata", "Request"):
            (2, written_size(events[4], "Request") - written_size(events[4], "Metadata")
             - written_size(events[5], "Metadata")),
        ("dave", "list", "pods", "Metadata", "None"): (1, -written_size(events[6], "Metadata")),
    }
    # Baseline exposure: none (Metadata only); candidate: 2 (see test_exposure).
    assert comparison["exposureEvents"]["baseline"] == 0
    assert comparison["exposureEvents"]["candidate"] == 2
    # Per level: the baseline's Metadata bytes are everything; the candidate's Metadata is e2 alone.
    assert comparison["levels"]["Metadata"]["baseline"] == base_bytes
    assert comparison["levels"]["Metadata"]["candidate"] == written_size(events[1], "Metadata")
    assert comparison["levels"]["Request"]["changePercent"] is None  # the baseline writes nothing there


def test_empty_input(tmp_path):
    path = tmp_path / "empty.log"
    path.write_bytes(b"")
    doc = simulate(loaded(POLICY), [str(path)])
    assert doc["input"]["events"] == 0
    assert doc["policy"]["totals"] == {"events": 0, "bytes": 0, "underRecordedEvents": 0, "underRecordedBytes": 0}
    assert doc["warnings"] == ["the input holds no audit events: every figure is zero"]


def test_only_malformed_lines_is_not_fatal(tmp_path):
    path = tmp_path / "junk.log"
    path.write_bytes(b"\x00\xff\xfe binary\n{\"level\": \"Metadata\"}\n" + b"x" * 10_000 + b"\n")
    doc = simulate(loaded(POLICY), [str(path)])
    # The second line is JSON but not an audit event (no stage, no verb).
    assert doc["input"]["malformedLines"] == 3
    assert doc["input"]["events"] == 0
    assert "not an audit Event" in doc["input"]["malformedExamples"][1]


def test_an_unknown_stage_is_a_malformed_line(tmp_path):
    # audit.k8s.io/v1 knows four stages (RequestReceived, ResponseStarted, ResponseComplete, Panic);
    # anything else, or a stage that is not a string, is not an event kube-apiserver wrote.
    good = event(1, "Metadata", "ResponseComplete", "get", "u", resource="pods")
    odd = [dict(good, stage=f"Stage{n}") for n in range(3)] + [dict(good, stage=["ResponseComplete"])]
    # A level that is not a string (unhashable, even) is malformed too, not a crash.
    odd += [dict(good, level=["Metadata"]), dict(good, level={"name": "Metadata"})]
    path = tmp_path / "audit.log"
    path.write_bytes(b"".join(line(ev) for ev in [good, *odd]))
    doc = simulate(loaded(POLICY), [str(path)])
    assert doc["input"]["events"] == 1 and doc["input"]["malformedLines"] == 6
    assert doc["input"]["eventsByStage"] == {"ResponseComplete": 1}
    assert "not an audit Event" in doc["input"]["malformedExamples"][0]


def test_unrecorded_request_received_stage(tmp_path):
    # The recording omitted RequestReceived; a candidate without omitStages writes that stage too.
    # Each final-stage event stands for one RequestReceived event: two here (e1, e2 below).
    events = [
        event(1, "Metadata", "ResponseComplete", "get", "u", uri="/api/v1/pods", resource="pods"),
        event(2, "Metadata", "ResponseComplete", "get", "u", uri="/api/v1/pods", resource="pods"),
    ]
    doc = simulate(loaded(EVERYTHING_METADATA), [_write(tmp_path, events)])
    # The RequestReceived event: same metadata, no responseStatus, stage renamed.
    rr = dict(events[0], stage="RequestReceived")
    del rr["responseStatus"]
    assert doc["policy"]["unrecordedStages"] == {
        "RequestReceived": {"events": 2, "approximateBytes": 2 * len(line(rr))},
    }
    # Not added to the totals: only the two recorded events are.
    assert doc["policy"]["totals"]["events"] == 2
    assert any("no RequestReceived events" in w for w in doc["warnings"])


def test_unrecorded_response_started_stage(tmp_path):
    # kube-apiserver writes a ResponseStarted event only for long-running requests (its
    # LongRunningFunc: the verbs watch and proxy, the subresources attach, exec, proxy, log and
    # portforward). The recording below omitted that stage but kept RequestReceived.
    watch = event(1, "Metadata", "ResponseComplete", "watch", "u", uri="/api/v1/pods?watch=1", resource="pods")
    exec_ = event(2, "Metadata", "ResponseComplete", "create", "u", uri="/api/v1/namespaces/a/pods/p/exec",
                  resource="pods", namespace="a", name="p", subresource="exec")
    get = event(3, "Metadata", "ResponseComplete", "get", "u", uri="/api/v1/pods", resource="pods")
    received = [dict(ev, stage="RequestReceived") for ev in (watch, exec_, get)]
    for ev in received:
        del ev["responseStatus"]
    events = received + [watch, exec_, get]
    log = _write(tmp_path, events)
    doc = simulate(loaded(EVERYTHING_METADATA), [log])
    # Two long-running requests, two ResponseStarted events; each is its final event with the
    # stage renamed (same metadata and response status; no bodies at Metadata anyway).
    started = [len(line(dict(ev, stage="ResponseStarted"))) for ev in (watch, exec_)]
    assert doc["policy"]["unrecordedStages"] == {"ResponseStarted": {"events": 2, "approximateBytes": sum(started)}}
    assert doc["policy"]["totals"]["events"] == 6  # not added to the totals
    assert any("no ResponseStarted events" in w for w in doc["warnings"])
    # A policy that omits the stage writes none; an input that has the stage needs no estimate.
    omitting = EVERYTHING_METADATA.replace("rules:", "omitStages: [ResponseStarted]\nrules:")
    assert simulate(loaded(omitting), [log])["policy"]["unrecordedStages"] == {}
    with_stage = _write(tmp_path, events + [dict(watch, stage="ResponseStarted")], name="with-stage.log")
    assert simulate(loaded(EVERYTHING_METADATA), [with_stage])["policy"]["unrecordedStages"] == {}


def test_under_recorded_only_where_a_body_can_exist(tmp_path):
    everything_rr = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n"
    events = [
        # a watch never logs a response body; a non-resource request has no body;
        # a RequestReceived event carries no body: none of these is under-recorded.
        event(1, "Metadata", "ResponseComplete", "watch", "u", uri="/api/v1/pods?watch=1", resource="pods"),
        event(2, "Metadata", "ResponseComplete", "get", "u", uri="/metrics"),
        event(3, "Metadata", "RequestReceived", "create", "u", uri="/api/v1/pods", resource="pods"),
        # a get's response body and a create's bodies are missing: under-recorded.
        event(4, "Metadata", "ResponseComplete", "get", "u", uri="/api/v1/pods/p", resource="pods"),
        event(5, "Request", "ResponseComplete", "create", "u", uri="/api/v1/pods", resource="pods",
              request={"kind": "Pod"}),
    ]
    doc = simulate(loaded(everything_rr), [_write(tmp_path, events)])
    assert doc["policy"]["totals"]["underRecordedEvents"] == 2
    assert doc["policy"]["totals"]["underRecordedBytes"] == (
        written_size(events[3], "RequestResponse") + written_size(events[4], "RequestResponse"))


def test_connect_and_log_subresources_are_not_under_recorded(tmp_path):
    everything_rr = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n"
    events = [
        # kube-apiserver logs no body for these at any level (see test_simulate_sizes):
        event(1, "Metadata", "ResponseComplete", "create", "u", uri="/api/v1/namespaces/a/pods/p/exec",
              resource="pods", namespace="a", name="p", subresource="exec"),
        event(2, "Metadata", "ResponseComplete", "get", "u", uri="/api/v1/namespaces/a/pods/p/log",
              resource="pods", namespace="a", name="p", subresource="log"),
        # an eviction is a create whose request and response bodies the Metadata recording left out
        event(3, "Metadata", "ResponseComplete", "create", "u", uri="/api/v1/namespaces/a/pods/p/eviction",
              resource="pods", namespace="a", name="p", subresource="eviction"),
    ]
    doc = simulate(loaded(everything_rr), [_write(tmp_path, events)])
    # 1 under-recorded event (the eviction); all 3 are written, each at its re-levelled size.
    assert doc["policy"]["totals"]["underRecordedEvents"] == 1
    assert doc["policy"]["totals"]["underRecordedBytes"] == written_size(events[2], "RequestResponse")
    assert doc["policy"]["totals"]["bytes"] == sum(written_size(e, "RequestResponse") for e in events)


def test_report_matches_its_schema(scenario_report, tmp_path):
    schema = json.loads(resources.files("kaudit.simulate").joinpath("report.schema.json").read_text())
    jsonschema.validate(scenario_report[1], schema)
    events = scenario()
    doc = simulate(loaded(POLICY), [_write(tmp_path, events)], loaded(EVERYTHING_METADATA))
    jsonschema.validate(doc, schema)



# The version-1 contract, key by key and in order. Changing this table means changing the
# documented schema (docs/simulate.md, report.schema.json): additions only, or a new version.
V1_KEYS = {
    "": "kind version input policy baseline comparison warnings",
    "input": "files events recordedBytes blankLines malformedLines malformedExamples eventsByStage "
             "eventsByRecordedLevel",
    "input.files[]": "name compressed lines bytes",
    "policy": "source hash totals levels dropped rules topSources exposure unrecordedStages",
    "policy.totals": "events bytes underRecordedEvents underRecordedBytes",
    "policy.levels": "Metadata Request RequestResponse",
    "policy.levels.*": "events bytes underRecordedEvents",
    "policy.dropped": "levelNone omittedStages",
    "policy.dropped.levelNone": "events recordedBytes",
    "policy.dropped.omittedStages.*": "events recordedBytes",
    "policy.rules[]": "index level summary matchedEvents writtenEvents omittedStageEvents bytes underRecordedEvents",
    "policy.topSources": "exact entries",
    "policy.topSources.entries[]": "user verb resource events bytes maxError",
    "policy.exposure": "events entries",
    "policy.exposure.entries[]": "resource verb user level bodies events",
    "comparison": "events bytes levels rules exposureEvents levelChanges",
    "comparison.bytes": "baseline candidate change changePercent",
    "comparison.levels.*": "baseline candidate change changePercent",
    "comparison.rules[]": "summary level candidateIndex baselineIndex baseline candidate change changePercent",
    "comparison.levelChanges": "exact entries",
    "comparison.levelChanges.entries[]": "user verb resource from to events bytesChange maxError",
}


def _objects(doc, path: str) -> list:
    found = [doc]
    for part in filter(None, path.split(".")):
        name, many = part.removesuffix("[]"), part.endswith("[]")
        if name == "*":
            found = [value for obj in found for value in obj.values()]
        else:
            found = [obj[name] for obj in found]
        if many:
            found = [item for items in found for item in items]
    return found


def test_json_keys_are_the_version_1_contract(tmp_path):
    doc = simulate(loaded(POLICY), [_write(tmp_path, scenario())], loaded(EVERYTHING_METADATA))
    assert doc["version"] == 1
    for path, keys in V1_KEYS.items():
        objects = _objects(doc, path)
        assert objects, path  # the scenario exercises every object
        for obj in objects:
            assert list(obj) == keys.split(), path
    assert list(doc["baseline"]) == list(doc["policy"])


def test_decision_cache_keeps_names_and_namespaces_when_rules_look_at_them(tmp_path):
    policy = """
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: RequestResponse
  resources: [{group: "", resources: ["configmaps"], resourceNames: ["special"]}]
- level: Request
  namespaces: ["prod"]
- level: Metadata
"""
    # Same user, verb and resource each time; only the name or the namespace differs, and with it
    # the level: a cache that dropped either would give every event the first event's level.
    events = [
        event(1, "Metadata", "ResponseComplete", "get", "u", resource="configmaps", namespace="dev", name="plain"),
        event(2, "Metadata", "ResponseComplete", "get", "u", resource="configmaps", namespace="dev", name="special"),
        event(3, "Metadata", "ResponseComplete", "get", "u", resource="configmaps", namespace="prod", name="plain"),
        event(4, "Metadata", "ResponseComplete", "get", "u", resource="configmaps", namespace="dev", name="plain"),
    ]
    doc = simulate(loaded(policy), [_write(tmp_path, events)])
    assert [r["writtenEvents"] for r in doc["policy"]["rules"]] == [1, 1, 2, 0]
