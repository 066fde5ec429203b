"""What one audit event would weigh in the log at a given level.

kube-apiserver's log backend writes each event as compact JSON (Go's ``encoding/json``) followed by
a newline. The estimate starts from the recorded line, which *is* such a serialization, and
subtracts what the candidate level would not write:

* ``level``: the recorded level's name is replaced by the candidate's (a difference of a few bytes);
* below ``Request``: the ``"requestObject":{...}`` member; below ``RequestResponse``: the
  ``"responseObject":{...}`` member, each with its separating comma;
* ``omitManagedFields``: ``metadata.managedFields`` of the bodies that remain — of the object, of
  every item of a list, of every row object of a Table (what upstream's ``copyWithoutManagedFields``
  strips). A ``patch`` request body is the raw patch as sent and is left as it is, as upstream does.

The byte span of a top-level member is the raw span the reader (:mod:`kaudit.auditlog`) keeps of
its value: exact, whatever the body holds. ``managedFields`` are measured the same way, from the
spans of the body's own members (:func:`managed_fields_len`).

:func:`go_json_len` matches Go's output for everything an audit event holds (strings, integers,
booleans, nested objects) including Go's HTML-safe escapes (``<``, ``>``, ``&`` as ``\\u003c``...)
and ``U+2028``/``U+2029``; it can differ only on floating-point numbers written with an exponent
and on the ``\\b``/``\\f`` escapes older Go versions spell as ``\\u0008``/``\\u000c`` — a few bytes in
events that have them.

A file whose lines are not compact JSON (re-encoded by a shipper with spaces...) is detected on its
first lines (:meth:`SizeEstimator.calibrate`) and then measured by re-serializing every event with
the fields the level keeps: slower, same accuracy. A compact file whose producer wrote ``<``, ``>``,
``&`` raw instead of Go's 6-byte escapes is measured from its lines, like a real log: the estimate
is then low by 5 bytes per such character in the kept fields (mostly ``&`` in ``requestURI``).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from kaudit.auditlog import AuditEvent, decode_event
from kaudit.policy.model import LEVEL_RANK

RANK_METADATA = LEVEL_RANK["Metadata"]
RANK_REQUEST = LEVEL_RANK["Request"]
RANK_REQUEST_RESPONSE = LEVEL_RANK["RequestResponse"]
# Verbs whose handlers log a request body (create/update/delete options, patch).
BODY_VERBS = frozenset(("create", "update", "patch", "delete", "deletecollection"))
# Only the events of these stages can carry bodies: RequestReceived is emitted before the
# handler reads the body, ResponseStarted only for long-running requests before the response.
BODY_STAGES = frozenset(("ResponseComplete", "Panic"))
# Core-group subresources served without an audited body: the connect handlers (exec, attach,
# port-forward, proxy) log neither a request nor a response object, and a pod's log is streamed,
# which bypasses the response-object logging of ordinary replies.
_CONNECT_SUBRESOURCES = frozenset(("exec", "attach", "portforward", "proxy"))
_STREAMED_SUBRESOURCES = frozenset(("log",))

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
_MANAGED_FIELDS_KEY = b'"managedFields":'
_MANAGED_FIELDS_MEMBER = len(_MANAGED_FIELDS_KEY)
# ',"KEY":' before a top-level member's value: what removing the member takes out besides the value.
_REQUEST_OBJECT_MEMBER = len(',"requestObject":')
_RESPONSE_OBJECT_MEMBER = len(',"responseObject":')
_RESPONSE_STATUS_MEMBER = len(',"responseStatus":')


def go_json_len(value: Any) -> int:
    """Bytes of ``value`` as Go's ``encoding/json`` writes it (compact, UTF-8, HTML-safe)."""
    data = _encode(value).encode("utf-8")
    extra = 0
    if b"<" in data or b">" in data or b"&" in data:
        extra += 5 * (data.count(b"<") + data.count(b">") + data.count(b"&"))
    if b"\xe2\x80\xa8" in data or b"\xe2\x80\xa9" in data:
        extra += 3 * (data.count(b"\xe2\x80\xa8") + data.count(b"\xe2\x80\xa9"))
    return len(data) + extra


def _typed(content: bytes, event: AuditEvent | dict[str, Any]) -> AuditEvent:
    """The reader's view of ``event``; a dict (the API of the tests and of older callers) is read
    again from its line, whose spans are what is measured."""
    return event if event.__class__ is AuditEvent else decode_event(content)


def member_len(content: bytes, event: AuditEvent | dict[str, Any], key: str) -> int:
    """Bytes that removing top-level member ``key`` (with its comma) takes out of ``content``:
    ``,"key":`` and the value's raw span."""
    return len(key) + 4 + len(getattr(_typed(content, event), key))


class _Metadata(msgspec.Struct, gc=False):
    managedFields: msgspec.Raw = msgspec.Raw(b"")


class _Object(msgspec.Struct, gc=False):
    metadata: dict[str, msgspec.Raw] | None = None


class _Row(msgspec.Struct, gc=False):
    object: _Object | None = None


class _Body(msgspec.Struct, gc=False):
    """The members of a body that hold managedFields: of the object, of each list item, of each
    Table row's object (what upstream's ``copyWithoutManagedFields`` strips)."""

    metadata: dict[str, msgspec.Raw] | None = None
    items: list[_Object] | None = None
    rows: list[_Row] | None = None


_decode_body = msgspec.json.Decoder(_Body).decode


def _span_managed_fields_len(metadata: dict[str, msgspec.Raw] | None) -> int:
    if not metadata or "managedFields" not in metadata:
        return 0
    # The member plus one comma, unless it is metadata's only member.
    return _MANAGED_FIELDS_MEMBER + len(metadata["managedFields"]) + (len(metadata) > 1)


def raw_managed_fields_len(body: msgspec.Raw) -> int:
    """:func:`managed_fields_len` of a body given as its raw span, measured on the span itself."""
    try:
        parsed = _decode_body(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):  # not shaped like an object
        return managed_fields_len(json.loads(bytes(body)))
    total = _span_managed_fields_len(parsed.metadata)
    for item in parsed.items or ():
        total += _span_managed_fields_len(item.metadata)
    for row in parsed.rows or ():
        if row.object is not None:
            total += _span_managed_fields_len(row.object.metadata)
    return total


def _metadata_managed_fields_len(obj: Any) -> int:
    if not isinstance(obj, dict):
        return 0
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or "managedFields" not in metadata:
        return 0
    # The member plus one comma, unless it is metadata's only member.
    return _MANAGED_FIELDS_MEMBER + go_json_len(metadata["managedFields"]) + (len(metadata) > 1)


def managed_fields_len(body: Any) -> int:
    """Bytes ``omitManagedFields`` removes from one body (object, list items, table rows)."""
    if not isinstance(body, dict):
        return 0
    total = _metadata_managed_fields_len(body)
    items = body.get("items")
    if isinstance(items, list):
        total += sum(_metadata_managed_fields_len(item) for item in items)
    rows = body.get("rows")
    if isinstance(rows, list):
        total += sum(_metadata_managed_fields_len(row.get("object")) for row in rows if isinstance(row, dict))
    return total


def _without_managed_fields(obj: Any) -> Any:
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict) and "managedFields" in obj["metadata"]:
        obj = dict(obj)
        obj["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    return obj


def strip_managed_fields(body: Any) -> Any:
    """A copy of ``body`` without managedFields where upstream removes them (inputs untouched)."""
    if not isinstance(body, dict):
        return body
    body = _without_managed_fields(body)
    if isinstance(body.get("items"), list):
        body = dict(body)
        body["items"] = [_without_managed_fields(item) for item in body["items"]]
    if isinstance(body.get("rows"), list):
        body = dict(body)
        body["rows"] = [
            {**row, "object": _without_managed_fields(row.get("object"))} if isinstance(row, dict) and "object" in row
            else row
            for row in body["rows"]
        ]
    return body


def bodies_missing(event: AuditEvent | dict[str, Any], recorded_rank: int, rank: int) -> bool:
    """Whether the recording level may have left out a body the candidate level would write.

    True only where a body can exist: a resource request's final event, a verb whose handler logs
    a request body (for Request), any verb but watch (for the response at RequestResponse); never
    for the connect subresources (``pods/exec``...) nor the response of the streamed ``pods/log``.
    """
    if isinstance(event, dict):
        from kaudit.auditlog import event_from_mapping

        event = event_from_mapping(event)
    if recorded_rank >= rank or event.stage not in BODY_STAGES:
        return False
    return body_possible(event.objectRef, event.verb, rank, recorded_rank)


def body_possible(object_ref: Any, verb: Any, rank: int, recorded_rank: int) -> bool:
    """:func:`bodies_missing` for a final-stage event of this request (object reference, verb)."""
    if object_ref is None or not object_ref.resource:
        return False
    subresource = object_ref.subresource if not object_ref.apiGroup else None
    if subresource in _CONNECT_SUBRESOURCES:
        return False
    if rank >= RANK_REQUEST and recorded_rank < RANK_REQUEST and verb in BODY_VERBS:
        return True
    return rank == RANK_REQUEST_RESPONSE and verb != "watch" and subresource not in _STREAMED_SUBRESOURCES


# One event's measurements, or the sums of a group of events (kaudit.simulate.core), by index:
# events, recorded bytes (line and newline), the removable members (',"requestObject":' and its
# value, the same for responseObject and responseStatus), the managedFields spans that
# omitManagedFields would remove from each body, and the bytes by which the event re-serialized
# the way Go writes it differs from its line (0 for compact lines). Sizes are linear in them.
N, RECORDED, REQUEST_MEMBER, RESPONSE_MEMBER, STATUS_MEMBER, MF_REQUEST, MF_RESPONSE, DELTA = range(8)
MEASURES = 8


def measure(content: bytes, event: AuditEvent, request_fields: bool, response_fields: bool,
            reserialize: bool = False) -> list[int]:
    """One event's measurements (see ``N``...); managedFields only where asked for (a decision
    strips them from that body). With ``reserialize`` (a file whose lines are not compact JSON),
    from the event re-serialized the way Go writes it."""
    if reserialize:
        parsed = json.loads(content)

        def member(key: str) -> int:
            return len(key) + 4 + go_json_len(parsed[key]) if key in parsed else 0

        return [
            1, len(content) + 1, member("requestObject"), member("responseObject"), member("responseStatus"),
            managed_fields_len(parsed.get("requestObject")) if request_fields else 0,
            managed_fields_len(parsed.get("responseObject")) if response_fields else 0,
            go_json_len(parsed) - len(content),
        ]
    fields = _MANAGED_FIELDS_KEY in content
    return [
        1, len(content) + 1,
        _REQUEST_OBJECT_MEMBER + len(event.requestObject) if event.requestObject else 0,
        _RESPONSE_OBJECT_MEMBER + len(event.responseObject) if event.responseObject else 0,
        _RESPONSE_STATUS_MEMBER + len(event.responseStatus) if event.responseStatus else 0,
        raw_managed_fields_len(event.requestObject) if fields and request_fields and event.requestObject else 0,
        raw_managed_fields_len(event.responseObject) if fields and response_fields and event.responseObject else 0,
        0,
    ]


# What writing at a level does to a recorded line (see size_plan).
SizePlan = tuple[int, bool, bool, bool, bool]


def size_plan(level: str, recorded: str, omit_managed_fields: bool, patch: bool = False) -> SizePlan:
    """What writing at ``level`` an event recorded at ``recorded`` does to its line: (change of
    the level name's length, drop the request body, drop the response body, strip the request
    body's managedFields, strip the response body's). A patch request body is the patch as sent:
    nothing is stripped from it, as upstream does."""
    rank = LEVEL_RANK[level]
    strip = omit_managed_fields
    return (len(level) - len(recorded), rank < RANK_REQUEST, rank < RANK_REQUEST_RESPONSE,
            strip and not patch and rank >= RANK_REQUEST, strip and rank >= RANK_REQUEST_RESPONSE)


def planned_size(sums: list[int], plan: SizePlan) -> int:
    """Bytes kube-apiserver would write for the measured events (newlines included) under a
    :func:`size_plan`: their recorded lines, with the level's name changed, less the bodies the
    level leaves out or their managedFields (measured only where they are stripped)."""
    change, drop_request, drop_response, strip_request, strip_response = plan
    return (sums[RECORDED] + sums[DELTA] + sums[N] * change
            - (sums[REQUEST_MEMBER] if drop_request else sums[MF_REQUEST] if strip_request else 0)
            - (sums[RESPONSE_MEMBER] if drop_response else sums[MF_RESPONSE] if strip_response else 0))


def written_size(sums: list[int], level: str, recorded: str, omit_managed_fields: bool, patch: bool = False) -> int:
    """:func:`planned_size` at ``level``."""
    return planned_size(sums, size_plan(level, recorded, omit_managed_fields, patch))


def other_stage_sizes(sums: list[int], level: str, recorded: str, stage: str) -> tuple[int, int]:
    """Approximate sizes at ``level`` of the RequestReceived and of the ResponseStarted events of
    the requests these final-stage events completed: the same metadata without bodies, naming
    another stage; RequestReceived also has no responseStatus (a long-running request logs no
    bodies)."""
    metadata = planned_size(sums, (len(level) - len(recorded), True, True, False, False)) + sums[N] * (
        len("RequestReceived") - len(stage))
    return metadata - sums[STATUS_MEMBER], metadata + sums[N] * (len("ResponseStarted") - len("RequestReceived"))


class SizeEstimator:
    """Estimates written sizes for the events of one input file (see the module docstring).

    Events are the reader's :class:`kaudit.auditlog.AuditEvent`; a dict is accepted too (it is
    read again from ``content``).
    """

    CALIBRATION_LINES = 16

    def __init__(self) -> None:
        self.reserialize = False
        self.calibrating = self.CALIBRATION_LINES  # lines of the current file still to check

    def start_file(self) -> None:
        self.reserialize = False
        self.calibrating = self.CALIBRATION_LINES

    def calibrate(self, content: bytes, event: Any = None) -> None:
        """Check a file's first events: are its lines compact JSON, as kube-apiserver writes them?

        A line counts as compact when its length is that of the event re-serialized compactly,
        with Go's HTML-safe escapes or without them (some producers write ``&`` raw).
        """
        if self.calibrating:
            self.calibrating -= 1
            parsed = json.loads(content)
            plain = len(_encode(parsed).encode("utf-8"))
            if len(content) != plain and len(content) != go_json_len(parsed):
                self.reserialize = True
                self.calibrating = 0

    def size(self, content: bytes, event: AuditEvent | dict[str, Any], rank: int, level: str,
             omit_managed_fields: bool) -> int:
        """Bytes kube-apiserver would write for ``event`` at ``level`` (newline included)."""
        typed = _typed(content, event)
        strips = omit_managed_fields and rank >= RANK_REQUEST
        sums = measure(content, typed, strips and typed.verb != "patch", strips and rank >= RANK_REQUEST_RESPONSE,
                       self.reserialize)
        return planned_size(sums, size_plan(level, typed.level or "", omit_managed_fields, typed.verb == "patch"))

    def request_received_size(self, content: bytes, event: AuditEvent | dict[str, Any], level: str) -> int:
        """Approximate size of the RequestReceived event of the request ``event`` completed
        (:func:`other_stage_sizes`)."""
        typed = _typed(content, event)
        sums = measure(content, typed, False, False, self.reserialize)
        return other_stage_sizes(sums, level, typed.level or "", typed.stage or "")[0]

    def response_started_size(self, content: bytes, event: AuditEvent | dict[str, Any], level: str) -> int:
        """Approximate size of the ResponseStarted event of the long-running request ``event``
        completed (:func:`other_stage_sizes`)."""
        typed = _typed(content, event)
        sums = measure(content, typed, False, False, self.reserialize)
        return other_stage_sizes(sums, level, typed.level or "", typed.stage or "")[1]
