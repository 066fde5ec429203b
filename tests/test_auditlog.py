"""The audit-event reader (kaudit.auditlog), on lines a real kube-apiserver wrote and on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kaudit.auditlog import (
    UNSET, AuditEvent, MalformedEvent, decode_event, decode_lines, event_from_mapping, request_attributes,
    status_code,
)
from kaudit.policy import PolicyOptions, compose_policy, load_policy
from kaudit.policy.evaluate import Evaluator

REAL = Path(__file__).resolve().parent / "fixtures" / "kube-apiserver-audit.log"


def real_lines() -> list[bytes]:
    return REAL.read_bytes().splitlines(keepends=True)


def test_real_lines_read_as_json_reads_them():
    for line in real_lines():
        parsed, event = json.loads(line), decode_event(line)
        assert event.level == parsed["level"] and event.stage == parsed["stage"] and event.verb == parsed["verb"]
        assert event.requestURI == parsed["requestURI"]
        assert event.user.username == parsed["user"]["username"]
        assert list(event.user.groups) == parsed["user"]["groups"]
        ref = parsed.get("objectRef")
        assert (event.objectRef is None) == (ref is None)
        if ref:
            assert (event.objectRef.resource, event.objectRef.namespace, event.objectRef.name) == (
                ref.get("resource"), ref.get("namespace"), ref.get("name"))
        assert status_code(event) == parsed.get("responseStatus", {}).get("code")


def test_body_spans_are_the_bytes_kube_apiserver_wrote():
    # A member's span is its value exactly as in the line: removing ',"KEY":' and the span from the
    # line leaves valid JSON without that member.
    seen = 0
    for line in real_lines():
        content = line.rstrip(b"\n")
        event = decode_event(content)
        for key in ("requestObject", "responseObject", "responseStatus"):
            span = bytes(getattr(event, key))
            if not span:
                assert key not in json.loads(content)
                continue
            seen += 1
            member = b',"' + key.encode() + b'":' + span
            assert content.count(member) == 1
            rest = json.loads(content.replace(member, b""))
            assert key not in rest and json.loads(span) == json.loads(content)[key]
    assert seen > 20


def test_null_is_absent_and_a_missing_verb_is_unset():
    event = decode_event(b'{"verb":null,"user":null,"objectRef":null,"requestURI":null}')
    assert event.verb is None and event.user is None and event.objectRef is None
    assert decode_event(b"{}").verb is UNSET
    attrs = request_attributes(decode_event(b'{"user":{"username":null,"groups":null},"requestURI":"/a%20b?x"}'))
    assert (attrs.user, attrs.groups, attrs.verb, attrs.path, attrs.resource_request) == ("", (), "", "/a b", False)


@pytest.mark.parametrize("line, kind, message", [
    (b"", "blank", "empty line"),
    (b"   \r\n", "blank", "empty line"),
    (b"{not json", "json", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    (b"[1, 2]", "object", "an audit event must be a JSON object"),
    (b'"Event"', "object", "an audit event must be a JSON object"),
    (b'{"verb": 3}', "field", "verb must be a string"),
    (b'{"user": "alice"}', "field", "user must be an object"),
    (b'{"user": {"groups": "ops"}}', "field", "user.groups must be a list of strings"),
    (b'{"user": {"groups": ["ops", 7]}}', "field", "user.groups must be a list of strings"),
    (b'{"objectRef": {"resource": "pods", "namespace": 0}}', "field", "objectRef.namespace must be a string"),
    (b'{"requestURI": ["/"]}', "field", "requestURI must be a string"),
    (b"[" * 100_000 + b"]" * 100_000, "json", "nested too deeply"),
])
def test_malformed_lines_say_why(line, kind, message):
    with pytest.raises(MalformedEvent) as caught:
        decode_event(line)
    assert (caught.value.kind, str(caught.value)) == (kind, message)
    events, bad = decode_lines([b'{"verb":"get"}\n', line, b'{"verb":"list"}\n'])
    assert bad == [1] and events[1].__class__ is MalformedEvent and str(events[1]) == message
    assert [events[0].verb, events[2].verb] == ["get", "list"]


def test_what_only_json_accepts_is_read_too():
    # json.loads takes NaN; the reader falls back to it rather than calling the line malformed.
    event = decode_event(b'{"verb":"get","requestURI":"/x","extra":NaN}')
    assert (event.verb, event.requestURI) == ("get", "/x")


def test_a_dict_and_its_line_are_read_alike():
    evaluator = Evaluator(load_policy(compose_policy(PolicyOptions(profile="Default")).text).policy)
    for line in real_lines():
        from_line = decode_event(line)
        from_dict = event_from_mapping(json.loads(line))
        assert request_attributes(from_line) == request_attributes(from_dict)
        assert evaluator.decide(from_line) is evaluator.evaluate_event(json.loads(line))
    with pytest.raises(MalformedEvent, match="must be a JSON object"):
        event_from_mapping(["not", "an", "event"])


def test_decoded_lines_are_audit_events():
    events, bad = decode_lines(real_lines())
    assert bad == [] and len(events) == len(real_lines()) and {type(e) for e in events} == {AuditEvent}


def test_event_mappings_read_the_lines_decode_lines_reads_as_plain_dicts():
    # Detection rules look at any member, so they get dicts; a line is an event there exactly when
    # the typed reader reads one from it, with the same message otherwise.
    from kaudit.auditlog import MalformedEvent, decode_lines, event_mappings

    good = b'{"kind":"Event","level":"Metadata","stage":"ResponseComplete","verb":"get","requestObject":{"a":[1]}}\n'
    lines = [good, b"\n", b"{not json\n", b'{"user":{"groups":[1]}}\n', b'[1]\n', b'{"verb":"get","x":NaN}\n']
    mappings = event_mappings(lines)
    typed, _ = decode_lines(lines)
    assert mappings[0] == json.loads(good) and mappings[5]["verb"] == "get"
    for mapping, event in zip(mappings[1:5], typed[1:5]):
        assert isinstance(mapping, MalformedEvent) and (mapping.kind, str(mapping)) == (event.kind, str(event))
    assert event_mappings([good, good]) == [json.loads(good)] * 2
