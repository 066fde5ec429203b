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

The byte span of a top-level member is found in the line itself: a JSON string cannot contain
``,"`` unescaped, so ``,"requestObject":`` occurs only as an object key. When that key and the key
that follows it in the event each occur exactly once in the line, the member is the bytes between
them, which is exact. Otherwise (a body that nests an object with the same key, a first member)
the member's length is computed by re-serializing its value the way Go does (:func:`go_json_len`).
``managedFields`` are always measured that way.

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


def go_json_len(value: Any) -> int:
    """Bytes of ``value`` as Go's ``encoding/json`` writes it (compact, UTF-8, HTML-safe)."""
    data = _encode(value).encode("utf-8")
    extra = 0
    if b"<" in data or b">" in data or b"&" in data:
        extra += 5 * (data.count(b"<") + data.count(b">") + data.count(b"&"))
    if b"\xe2\x80\xa8" in data or b"\xe2\x80\xa9" in data:
        extra += 3 * (data.count(b"\xe2\x80\xa8") + data.count(b"\xe2\x80\xa9"))
    return len(data) + extra


def member_len(content: bytes, event: dict, key: str) -> int:
    """Bytes that removing top-level member ``key`` (with its comma) takes out of ``content``."""
    marker = b',"' + key.encode() + b'":'
    if content.count(marker) == 1:
        start = content.find(marker)
        keys = list(event)
        position = keys.index(key)
        if position + 1 < len(keys):
            following = b',"' + keys[position + 1].encode() + b'":'
            if content.count(following) == 1:
                end = content.find(following)
                if end > start:
                    return end - start
        elif content.endswith(b"}"):
            return len(content) - 1 - start
    return len(key) + 4 + go_json_len(event[key])


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


def bodies_missing(event: dict, recorded_rank: int, rank: int) -> bool:
    """Whether the recording level may have left out a body the candidate level would write.

    True only where a body can exist: a resource request's final event, a verb whose handler logs
    a request body (for Request), any verb but watch (for the response at RequestResponse); never
    for the connect subresources (``pods/exec``...) nor the response of the streamed ``pods/log``.
    """
    if recorded_rank >= rank or event.get("stage") not in BODY_STAGES:
        return False
    object_ref = event.get("objectRef")
    if not isinstance(object_ref, dict) or not object_ref.get("resource"):
        return False
    subresource = object_ref.get("subresource") if not object_ref.get("apiGroup") else None
    if subresource in _CONNECT_SUBRESOURCES:
        return False
    verb = event.get("verb")
    if rank >= RANK_REQUEST and recorded_rank < RANK_REQUEST and verb in BODY_VERBS:
        return True
    return rank == RANK_REQUEST_RESPONSE and verb != "watch" and subresource not in _STREAMED_SUBRESOURCES


class SizeEstimator:
    """Estimates written sizes for the events of one input file (see the module docstring)."""

    CALIBRATION_LINES = 16

    def __init__(self) -> None:
        self.reserialize = False
        self.calibrating = self.CALIBRATION_LINES  # lines of the current file still to check

    def start_file(self) -> None:
        self.reserialize = False
        self.calibrating = self.CALIBRATION_LINES

    def calibrate(self, content: bytes, event: dict) -> None:
        """Check a file's first events: are its lines compact JSON, as kube-apiserver writes them?

        A line counts as compact when its length is that of the event re-serialized compactly,
        with Go's HTML-safe escapes or without them (some producers write ``&`` raw).
        """
        if self.calibrating:
            self.calibrating -= 1
            plain = len(_encode(event).encode("utf-8"))
            if len(content) != plain and len(content) != go_json_len(event):
                self.reserialize = True
                self.calibrating = 0

    def size(self, content: bytes, event: dict, rank: int, level: str, omit_managed_fields: bool) -> int:
        """Bytes kube-apiserver would write for ``event`` at ``level`` (newline included)."""
        if self.reserialize:
            return self._reserialized_size(event, rank, level, omit_managed_fields)
        size = len(content) + 1 + len(level) - len(event["level"])
        if "requestObject" in event:
            if rank < RANK_REQUEST:
                size -= member_len(content, event, "requestObject")
            elif omit_managed_fields and event.get("verb") != "patch" and _MANAGED_FIELDS_KEY in content:
                size -= managed_fields_len(event["requestObject"])
        if "responseObject" in event:
            if rank < RANK_REQUEST_RESPONSE:
                size -= member_len(content, event, "responseObject")
            elif omit_managed_fields and _MANAGED_FIELDS_KEY in content:
                size -= managed_fields_len(event["responseObject"])
        return size

    @staticmethod
    def _reserialized_size(event: dict, rank: int, level: str, omit_managed_fields: bool) -> int:
        kept = dict(event)
        kept["level"] = level
        if rank < RANK_REQUEST:
            kept.pop("requestObject", None)
        elif omit_managed_fields and "requestObject" in kept and kept.get("verb") != "patch":
            kept["requestObject"] = strip_managed_fields(kept["requestObject"])
        if rank < RANK_REQUEST_RESPONSE:
            kept.pop("responseObject", None)
        elif omit_managed_fields and "responseObject" in kept:
            kept["responseObject"] = strip_managed_fields(kept["responseObject"])
        return go_json_len(kept) + 1

    def request_received_size(self, content: bytes, event: dict, level: str) -> int:
        """Approximate size of the RequestReceived event of the request ``event`` completed.

        That event has no bodies and no responseStatus and names another stage; the rest of
        the metadata is the same.
        """
        size = self.size(content, event, RANK_METADATA, level, False)
        size += len("RequestReceived") - len(event.get("stage", ""))
        if "responseStatus" in event:
            size -= len("responseStatus") + 4 + go_json_len(event["responseStatus"])
        return size

    def response_started_size(self, content: bytes, event: dict, level: str) -> int:
        """Approximate size of the ResponseStarted event of the long-running request ``event`` completed.

        That event has the response status but no bodies (a long-running request logs none) and
        names another stage; the rest of the metadata is the same.
        """
        size = self.size(content, event, RANK_METADATA, level, False)
        return size + len("ResponseStarted") - len(event.get("stage", ""))
