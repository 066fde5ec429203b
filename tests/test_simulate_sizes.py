"""Byte estimation: Go's JSON lengths, member spans, managedFields, non-compact input."""

from __future__ import annotations

import json

from kaudit.simulate.counters import TopCounter
from kaudit.simulate.sizes import (
    SizeEstimator, bodies_missing, go_json_len, managed_fields_len, member_len, strip_managed_fields,
)
from simulate_support import event, line, managed, written_size


def test_go_json_len_follows_go_escaping():
    # Go writes <, > and & as \u003c, \u003e, \u0026 (6 bytes each): "<a&b>" -> 2 quotes + 3*6 + 2 = 22.
    assert go_json_len("<a&b>") == 22
    # Non-ASCII stays raw UTF-8: "é" is 2 bytes, plus 2 quotes.
    assert go_json_len("é") == 4
    # U+2028 is escaped as \u2028 (6 bytes), not written raw (3 bytes): 6 + 2 quotes.
    assert go_json_len("\u2028") == 8
    # Compact separators: {"a":[1,true,null]} is 19 bytes.
    assert go_json_len({"a": [1, True, None]}) == 19


def test_member_len_by_hand():
    # ,"requestObject":{"a":1} = 1 (comma) + 15 ("requestObject" with quotes) + 1 (colon) + 7 = 24 bytes.
    ev = {"level": "Request", "requestObject": {"a": 1}, "stageTimestamp": "t"}
    content = json.dumps(ev, separators=(",", ":")).encode()
    assert member_len(content, ev, "requestObject") == 24
    # As the last member it runs up to the closing brace: same 24 bytes.
    ev2 = {"level": "Request", "requestObject": {"a": 1}}
    assert member_len(json.dumps(ev2, separators=(",", ":")).encode(), ev2, "requestObject") == 24


def test_member_len_falls_back_when_the_key_repeats_inside_a_body():
    # A body that nests a "responseObject" key makes the span search ambiguous; the fallback
    # re-serializes the value and must give the same length as the unambiguous case.
    # (A nested key first in its object is written {"responseObject": and cannot be confused
    # with the top-level ,"responseObject": marker; only a comma-led repeat is ambiguous.)
    body = {"kind": "Thing", "spec": {"a": 1, "responseObject": {"x": "y"}}}
    ev = event(1, "RequestResponse", "ResponseComplete", "get", "u", resource="things", response=body)
    content = line(ev).rstrip(b"\n")
    assert content.count(b',"responseObject":') == 2
    assert member_len(content, ev, "responseObject") == 1 + len('"responseObject":') + go_json_len(body)


def test_managed_fields_of_object_list_and_table():
    obj = {"metadata": managed("a")}
    one = go_json_len(obj) - go_json_len(strip_managed_fields(obj))
    assert managed_fields_len(obj) == one
    # A list: each item's managedFields go; the list's own metadata has none.
    listing = {"kind": "List", "metadata": {"resourceVersion": "1"}, "items": [{"metadata": managed("a")}] * 3}
    assert managed_fields_len(listing) == 3 * one
    # A Table (kubectl get): each row's object.
    table = {"kind": "Table", "rows": [{"cells": ["a"], "object": {"metadata": managed("a")}}] * 2}
    assert managed_fields_len(table) == 2 * one
    # Metadata holding only managedFields: no comma goes with it ({"managedFields":[...]} -> {}).
    alone = {"metadata": {"managedFields": []}}
    assert managed_fields_len(alone) == len('"managedFields":[]')
    # strip_managed_fields never modifies its input.
    assert "managedFields" in listing["items"][0]["metadata"]


def test_patch_request_body_keeps_managed_fields():
    # Upstream logs a patch body as the raw patch (LogRequestPatch): nothing is stripped from it.
    patch = {"metadata": managed("p")}
    ev = event(1, "Request", "ResponseComplete", "patch", "u", resource="pods", request=patch)
    content = line(ev).rstrip(b"\n")
    estimator = SizeEstimator()
    assert estimator.size(content, ev, 2, "Request", True) == len(content) + 1


def test_levels_by_hand():
    ev = event(1, "RequestResponse", "ResponseComplete", "create", "u", resource="pods",
               request={"a": 1}, response={"b": 2})
    content = line(ev).rstrip(b"\n")
    estimator = SizeEstimator()
    full = len(content) + 1
    # RequestResponse: the line as recorded.
    assert estimator.size(content, ev, 3, "RequestResponse", False) == full
    # Request: ,"responseObject":{"b":2} = 1 + 16 + 1 + 7 = 25 bytes less, and "Request" is 8 bytes
    # shorter than "RequestResponse".
    assert estimator.size(content, ev, 2, "Request", False) == full - 25 - 8
    # Metadata: also ,"requestObject":{"a":1} (24 bytes); "Metadata" is 7 bytes shorter.
    assert estimator.size(content, ev, 1, "Metadata", False) == full - 25 - 24 - 7
    assert estimator.size(content, ev, 1, "Metadata", False) == written_size(ev, "Metadata")


def test_non_compact_input_is_reserialized():
    # A shipper re-encoded the events with spaces: the line length no longer is what
    # kube-apiserver writes; the estimator notices on the first line and re-serializes.
    ev = event(1, "RequestResponse", "ResponseComplete", "get", "u", resource="pods", response={"b": 2})
    spaced = json.dumps(ev).encode()
    estimator = SizeEstimator()
    estimator.calibrate(spaced, ev)
    assert estimator.reserialize
    assert estimator.size(spaced, ev, 3, "RequestResponse", False) == written_size(ev, "RequestResponse")
    assert estimator.size(spaced, ev, 1, "Metadata", False) == written_size(ev, "Metadata")
    compact = SizeEstimator()
    compact.calibrate(line(ev).rstrip(b"\n"), ev)
    assert not compact.reserialize


def test_bodies_missing():
    get = event(1, "Metadata", "ResponseComplete", "get", "u", resource="pods")
    create = event(2, "Metadata", "ResponseComplete", "create", "u", resource="pods")
    # Request adds a request body: a create may have one, a get never does.
    assert bodies_missing(create, 1, 2)
    assert not bodies_missing(get, 1, 2)
    # RequestResponse adds a response body to a get, but not to a watch.
    assert bodies_missing(get, 1, 3)
    assert not bodies_missing(event(3, "Metadata", "ResponseComplete", "watch", "u", resource="pods"), 1, 3)
    # Recorded at the candidate's level or above: nothing is missing.
    assert not bodies_missing(get, 3, 3)


def test_no_body_is_missing_where_kube_apiserver_logs_none():
    # Upstream (k8s.io/apiserver pkg/endpoints/handlers): request objects are logged only by the
    # create, update, patch and delete handlers; the connect handler (rest.go ConnectResource,
    # serving pods/exec, attach, portforward and the proxy subresources) logs none, and it writes
    # no response through WriteObjectNegotiated, the one caller of audit.LogResponseObject.
    for subresource, verb in (("exec", "create"), ("exec", "get"), ("attach", "create"),
                              ("portforward", "create"), ("proxy", "get")):
        connect = event(1, "Metadata", "ResponseComplete", verb, "u", resource="pods", subresource=subresource)
        assert not bodies_missing(connect, 1, 2), subresource
        assert not bodies_missing(connect, 1, 3), subresource
    node_proxy = event(2, "Metadata", "ResponseComplete", "get", "u", resource="nodes", subresource="proxy")
    assert not bodies_missing(node_proxy, 1, 3)
    # pods/log returns a ResourceStreamer: WriteObjectNegotiated streams it and returns before
    # audit.LogResponseObject, so no response body is ever logged for it.
    logs = event(3, "Metadata", "ResponseComplete", "get", "u", resource="pods", subresource="log")
    assert not bodies_missing(logs, 1, 3)
    # An eviction is an ordinary create (create.go logs its body); a custom resource's own
    # "proxy" subresource is served by the ordinary handlers.
    eviction = event(4, "Metadata", "ResponseComplete", "create", "u", resource="pods", subresource="eviction")
    assert bodies_missing(eviction, 1, 2) and bodies_missing(eviction, 1, 3)
    custom = event(5, "Metadata", "ResponseComplete", "get", "u", resource="widgets", group="example.com",
                   subresource="proxy")
    assert bodies_missing(custom, 1, 3)


def test_top_counter_is_exact_under_capacity_and_bounded_above():
    counter = TopCounter(capacity=10)
    for key in range(10):
        counter.add(key, 100 + key)
    assert counter.exact and counter.top(1) == [(9, 109, 1, 0, 0)]
    # Twenty light keys force evictions: memory stays at the capacity, and every reported
    # weight bounds the true weight from above, within its error.
    for key in range(100, 120):
        counter.add(key, 1)
    counter.add(9, 1)
    assert len(counter.entries) <= 10
    assert not counter.exact
    for key, weight, _, error, _ in counter.top(10):
        true = 110 if key == 9 else (100 + key if key < 10 else 1)
        assert weight - error <= true <= weight
