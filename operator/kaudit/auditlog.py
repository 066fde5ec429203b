"""The one reader of kube-apiserver audit events (``audit.k8s.io/v1`` Event JSON, one per line).

Every command that reads audit logs (``policy eval``, ``policy simulate``, the detection engine)
reads each event here. The API, all of it typed::

    events, bad = decode_lines(lines)    # lines: list[bytes] -> (list[AuditEvent | MalformedEvent],
                                         #   positions of the MalformedEvents)
    event = decode_event(line)           # one line -> AuditEvent; raises MalformedEvent
    mappings = event_mappings(lines)     # list[dict | MalformedEvent]: every member, for readers
                                         #   that look at any field (detection rules); same checks
    line = unwrap(line)                  # a GKE LogEntry / AKS record -> the Event line it holds
    envelope(first_line)                 # whether a file's lines need unwrap (cheap test)
    keys = RequestKeys(...); keys.values(events)   # per-request results, cached (see below)

:class:`AuditEvent` is a typed view of the fields kaudit looks at (level, stage, verb, requestURI,
user, objectRef) and, as raw JSON spans (``msgspec.Raw``: exact byte lengths), the response status
and the two bodies. :class:`MalformedEvent` (a ``ValueError``) says why a line holds no event:
``kind`` is ``"blank"``, ``"json"``, ``"object"`` or ``"field"``, ``str()`` a one-line reason that
names the field. The decoder checks the JSON type of every field it reads and skips everything
else without building it, so a wrongly typed field is reported whichever policy reads the event,
and a body costs what it takes to scan it, not to build it.

The decoder is msgspec's (``msgspec.json.Decoder`` into ``msgspec.Struct`` types), chosen by
measurement (``bench/bench_decoders.py``): on the generated 200 MiB benchmark log, one pinned CPU,
by CPU time, ``json.loads`` 135 MiB/s, ``orjson.loads`` 403 MiB/s, msgspec into plain dicts 446
MiB/s and msgspec into these structs 889 MiB/s. orjson, like ``json``, builds a dict of every field
of every event (bodies included), which caps a reader built on it at 3x ``json.loads``; the typed
decoder is 6.6x, and its ``msgspec.Raw`` spans give the exact byte length of each body as
kube-apiserver wrote it, which is what the size estimates need (:mod:`kaudit.simulate.sizes`).

A JSON ``null`` counts as the field being absent (Go writes none: it omits empty fields). What
the decoder cannot read falls back to ``json`` to say why (:class:`MalformedEvent`), so the
messages are the same whatever decoder is used.

:class:`RequestKeys` builds the cache key of an event's request as a policy sees it (the user
folded to what the rules list, namespace and name folded to the values the rules list, the URL for
non-resource requests); the evaluator and the simulation both cache their decisions under it, so
evaluating an event is mostly a dict lookup. :data:`OTHER_USER` and :data:`OTHER` are the one
placeholder each for "a value no rule lists".
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterable, Literal
from urllib.parse import unquote

import msgspec
import msgspec.structs
from msgspec import UNSET, Raw, Struct, UnsetType

__all__ = [
    "AuditEvent", "MalformedEvent", "ObjectRef", "OTHER_USER", "RequestAttributes", "RequestKeys", "UserInfo",
    "decode_event", "decode_lines", "envelope", "event_from_mapping", "event_mappings", "request_attributes",
    "request_path",
    "unwrap",
]


class UserInfo(Struct, frozen=True, gc=False):
    """``event.user`` (authentication/v1 UserInfo): the fields a policy looks at. Frozen, so
    hashable: :class:`RequestKeys` keys its user classes on it."""

    username: str | None = None
    groups: tuple[str, ...] | None = None


class ObjectRef(Struct, gc=False):
    """``event.objectRef``: the fields a policy looks at."""

    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    apiGroup: str | None = None
    subresource: str | None = None


_ABSENT = Raw(b"")  # an empty span: the member is not in the line


# The names kube-apiserver writes. Decoded as literals, they come back as these very strings
# (no new string per event, hashes already computed: the caches' keys hold them).
Level = Literal["None", "Metadata", "Request", "RequestResponse"]
Stage = Literal["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]
# RequestInfo's verbs for resource requests, the lower-case HTTP methods for the others.
Verb = Literal["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "proxy",
               "post", "put", "head", "options", "connect", "trace"]


class AuditEvent(Struct, gc=False):
    """One audit Event as kaudit reads it.

    ``level``, ``stage`` and ``verb`` are one of kube-apiserver's names, or, in an event that
    holds another value there, that value as it is (any JSON value for level and stage, any
    string for verb): whether they name a level and a stage is for the caller to decide
    (``policy eval`` does not look at them). ``verb`` is ``UNSET`` when the member is missing
    (which ``simulate`` refuses), ``None`` for a JSON null. ``responseStatus``, ``requestObject``
    and ``responseObject`` are the raw JSON bytes of the member's value, empty when the member is
    absent.
    """

    level: Level | None = None
    stage: Stage | None = None
    requestURI: str | None = None
    verb: Verb | None | UnsetType = UNSET
    user: UserInfo | None = None
    objectRef: ObjectRef | None = None
    responseStatus: Raw = _ABSENT
    requestObject: Raw = _ABSENT
    responseObject: Raw = _ABSENT


# AuditEvent's fields, in its order, with any level, stage and verb: the decoder of the events
# that hold another value there.
_ANY_NAMES = {"level": Any, "stage": Any, "verb": str | None | UnsetType}
_AnyNames = msgspec.defstruct(
    "_AnyNames", [(f.name, _ANY_NAMES.get(f.name, f.type), f.default) for f in msgspec.structs.fields(AuditEvent)],
    gc=False)


class _Status(Struct, gc=False):
    code: Any = None


_decode_known = msgspec.json.Decoder(AuditEvent).decode
_decode_any = msgspec.json.Decoder(_AnyNames).decode
_NAMES = ("`$.level`", "`$.stage`", "`$.verb`")


def _decode(content: bytes) -> AuditEvent:
    """The event, or msgspec's error; a level, stage or verb other than kube-apiserver's names is
    read as it is (a second, slower decoder)."""
    try:
        return _decode_known(content)
    except msgspec.ValidationError as exc:
        if not str(exc).endswith(_NAMES):
            raise
    return AuditEvent(*msgspec.structs.astuple(_decode_any(content)))


_decode_status = msgspec.json.Decoder(_Status).decode
_encode = msgspec.json.Encoder().encode
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


class MalformedEvent(ValueError):
    """A line that holds no usable audit event. ``kind`` says why: ``"blank"`` (an empty line),
    ``"json"`` (not JSON), ``"object"`` (JSON, but not an object) or ``"field"`` (a field of the
    wrong JSON type); ``str()`` is a one-line reason naming the field where there is one."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# msgspec's wording: "Expected `str | null`, got `int` - at `$.user.groups[1]`".
_FIELD_ERROR = re.compile(r"Expected `(?P<expected>[^`]*)`, got `[^`]*`(?: - at `\$\.(?P<path>[^`]*)`)?")
_KINDS = {"str": "a string", "object": "an object", "array": "a list"}


def _field_message(error: msgspec.ValidationError) -> MalformedEvent:
    match = _FIELD_ERROR.match(str(error))
    if match is None:
        return MalformedEvent("field", str(error))
    path = match["path"]
    if not path:
        return MalformedEvent("object", "an audit event must be a JSON object")
    if path == "user.groups" or path.startswith("user.groups["):
        return MalformedEvent("field", "user.groups must be a list of strings")
    expected = match["expected"].split(" | ")[0]
    return MalformedEvent("field", f"{path} must be {_KINDS.get(expected, expected)}")


def _why_not(content: bytes) -> MalformedEvent | AuditEvent:
    """The line failed the fast decoder: say why with ``json``'s messages, or read it after all
    (``json`` accepts a few things msgspec refuses, such as ``NaN`` and lone surrogate escapes)."""
    if not content.strip():
        return MalformedEvent("blank", "empty line")
    try:
        value = json.loads(content)
    except RecursionError:
        return MalformedEvent("json", "nested too deeply")
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return MalformedEvent("json", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    try:
        return event_from_mapping(value)
    except MalformedEvent as exc:
        return exc


def decode_event(content: bytes) -> AuditEvent:
    """The event on one line (without its newline, or with it: surrounding whitespace is allowed).
    Raises :class:`MalformedEvent`."""
    try:
        return _decode(content)
    except _DECODE_ERRORS:
        result = _why_not(content)
    if isinstance(result, MalformedEvent):
        raise result
    return result


def decode_lines(lines: list[bytes]) -> tuple[list[AuditEvent | MalformedEvent], list[int]]:
    """(the event on each line, or the :class:`MalformedEvent` saying why there is none; the
    positions of the malformed lines).

    The lines are decoded by one ``map`` (no Python code runs per line); only a batch with a bad
    line is decoded again line by line.
    """
    try:
        return list(map(_decode_known, lines)), []
    except _DECODE_ERRORS:
        events = [_decode_or_why_not(line) for line in lines]
        return events, [i for i, event in enumerate(events) if event.__class__ is MalformedEvent]


def _decode_or_why_not(content: bytes) -> AuditEvent | MalformedEvent:
    try:
        return _decode(content)
    except _DECODE_ERRORS:
        return _why_not(content)


_decode_mapping = msgspec.json.Decoder().decode


def event_mappings(lines: list[bytes]) -> list[dict[str, Any] | MalformedEvent]:
    """Each line's event as a plain dict of every member (for readers that look at any field, as
    detection rules do), or the :class:`MalformedEvent` saying why there is none: a line is an
    event here exactly when :func:`decode_lines` reads one from it (the same checks, the same
    messages). Envelopes are not unwrapped here: pass the lines through :func:`unwrap` first."""
    events, malformed = decode_lines(lines)
    if not malformed:
        try:
            return list(map(_decode_mapping, lines))
        except _DECODE_ERRORS:
            pass
    found: list[dict[str, Any] | MalformedEvent] = []
    for line, event in zip(lines, events):
        if isinstance(event, MalformedEvent):
            found.append(event)
            continue
        try:
            found.append(_decode_mapping(line))
        except _DECODE_ERRORS:  # what json accepts and msgspec does not (NaN, lone surrogates)
            found.append(json.loads(line))
    return found


def event_from_mapping(value: Any) -> AuditEvent:
    """The event an already parsed JSON value (a dict, from ``json.loads``) holds, read the same
    way as a line. Raises :class:`MalformedEvent`."""
    if value.__class__ is not dict:
        raise MalformedEvent("object", "an audit event must be a JSON object")
    try:
        return _decode(_encode(value))
    except msgspec.ValidationError as exc:
        raise _field_message(exc) from None
    except (msgspec.EncodeError, msgspec.DecodeError, RecursionError, TypeError, ValueError) as exc:
        raise MalformedEvent("json", f"cannot be read: {exc}") from None


def status_code(event: AuditEvent) -> Any:
    """``responseStatus.code`` (None when absent or when the status is not an object)."""
    if not event.responseStatus:
        return None
    try:
        return _decode_status(event.responseStatus).code
    except _DECODE_ERRORS:
        return None


# --- the request a policy evaluates ---------------------------------------------------------------

class RequestAttributes(Struct, frozen=True, gc=False):
    """What the evaluator looks at (upstream's authorizer.Attributes, as far as audit uses it)."""

    user: Any  # username (str); None when the request carries no user; OTHER_USER in cache keys
    groups: tuple[str, ...]
    verb: str  # API verb (get, list, watch, create, ...) or lower-case HTTP method for non-resource URLs
    resource_request: bool
    namespace: str = ""  # "" for cluster-scoped resources
    api_group: str = ""  # "" for the core group
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""  # URL path without query; what nonResourceURLs match


def request_path(request_uri: str) -> str:
    """The URL path kube-apiserver matches nonResourceURLs against: no query, percent-decoded."""
    path = request_uri.partition("?")[0]
    return unquote(path) if "%" in path else path


def request_name(verb: str, subresource: str, name: str) -> str:
    """The name the policy saw: none for a create without subresource. kube-apiserver fills
    ``objectRef.name`` in from the body after the policy was evaluated on the URL's attributes
    (LogRequestObject in pkg/audit/request.go); a create on a subresource has it in its URL."""
    return "" if verb == "create" and not subresource else name


def request_attributes(event: AuditEvent, user: Any = UNSET,
                       groups: tuple[str, ...] | None = None) -> RequestAttributes:
    """The request attributes of an audit Event: a resource request when ``objectRef.resource``
    is set, else a non-resource request whose path is ``requestURI`` without its query string.
    The user is ``event.user`` (the authenticated user; policy is evaluated before impersonation),
    unless ``user`` (and ``groups``) stand for it, as in :class:`RequestKeys`.

    The path is percent-decoded (it is the URL's decoded path) and a create has no name
    (:func:`request_name`): what the policy saw when kube-apiserver evaluated it.
    """
    info = event.user
    if user is UNSET:
        user = None if info is None else (info.username or "")
        groups = () if info is None else (info.groups or ())
    verb = event.verb or ""
    ref = event.objectRef
    if ref is not None and ref.resource:
        subresource = ref.subresource or ""
        return RequestAttributes(
            user=user, groups=groups or (), verb=verb, resource_request=True, namespace=ref.namespace or "",
            api_group=ref.apiGroup or "", resource=ref.resource, subresource=subresource,
            name=request_name(verb, subresource, ref.name or ""),
        )
    return RequestAttributes(user=user, groups=groups or (), verb=verb, resource_request=False,
                             path=request_path(event.requestURI or ""))


class _Placeholder:
    __slots__ = ("label",)

    def __init__(self, label: str):
        self.label = label

    def __repr__(self) -> str:
        return f"<{self.label}>"


# Stands for every username that no rule's ``users`` lists: never equal to a real username, so it
# fails every ``users`` check, while ``userGroups`` checks still see the request's groups.
OTHER_USER = _Placeholder("a user no rule lists")
# Stands, in a cache key, for every namespace (name) that no rule lists.
OTHER = _Placeholder("a value no rule lists")


class _UserClass:
    """The user as the rules see it; one instance per class, so a key holding it hashes by id."""

    __slots__ = ("user", "groups")

    def __init__(self, user: Any, groups: tuple[str, ...]):
        self.user = user
        self.groups = groups


_NO_USER = _UserClass(None, ())


class RequestKeys:
    """Cache keys of requests as the rules of one or more policies see them, and a bounded
    cache of whatever the caller computes from a request (a decision, or several).

    The user is its name only if some rule lists that name (any other name is :data:`OTHER_USER`)
    and only those of its groups some rule lists; namespace and name only when some rule looks at
    them; the URL path only for non-resource requests. Rules compare usernames and groups only
    for equality and an empty list matches everything, so requests with one key get one decision.
    Each table is emptied when it reaches ``limit`` entries: that costs time, never correctness.
    """

    def __init__(self, users: Iterable[str], groups: Iterable[str], names: Iterable[str] | None,
                 namespaces: Iterable[str] | None, compute: Callable[[AuditEvent, RequestAttributes], Any], limit: int):
        self._rule_users = frozenset(users)
        self._rule_groups = frozenset(groups)
        # The objectRef's namespace and name are in the key only when some rule looks at them, and
        # then only as themselves when some rule lists them: rules compare them for equality with
        # their lists only, so every other value is :data:`OTHER` (a log has as many names as
        # objects, as many namespaces as tenants).
        self._names = None if names is None else frozenset(names)
        self._namespaces = None if namespaces is None else frozenset(namespaces)
        self._compute = compute
        self.limit = limit
        self.cache: dict[tuple[Any, ...], Any] = {}
        self._users: dict[UserInfo, _UserClass] = {}
        self._classes: dict[tuple[Any, ...], _UserClass] = {}

    def _user_class(self, info: UserInfo) -> _UserClass:
        name = info.username or ""  # a null or missing name is an empty one
        groups = tuple(sorted({group for group in info.groups or () if group in self._rule_groups}))
        shape = (name if name in self._rule_users else OTHER_USER, groups)
        user_class = self._classes.get(shape)
        if user_class is None:
            if len(self._classes) >= self.limit:
                self._classes.clear()
                self._users.clear()
            user_class = self._classes[shape] = _UserClass(*shape)
        if len(self._users) >= self.limit:
            self._users.clear()
        self._users[info] = user_class
        return user_class

    def get(self, event: AuditEvent) -> Any:
        """What ``compute(event, attributes)`` returns for the event's request, cached by key."""
        return self.values((event,))[0]

    def values(self, events: Iterable[AuditEvent | MalformedEvent]) -> list[Any]:
        """:meth:`get` for each event (None for a :class:`MalformedEvent`), in one loop: this is
        the hot loop of every log reader, so it makes no Python call on a cache hit."""
        users, user_class_of, cache = self._users, self._user_class, self.cache
        names, namespaces = self._names, self._namespaces
        found: list[Any] = []
        append = found.append
        key: tuple[Any, ...]
        user_class: _UserClass | None
        namespace: Any
        name: Any
        for event in events:
            if not isinstance(event, AuditEvent):
                append(None)
                continue
            info = event.user
            if info is None:
                user_class = _NO_USER
            else:
                user_class = users.get(info)
                if user_class is None:
                    user_class = user_class_of(info)
            ref = event.objectRef
            if ref is None or not ref.resource:
                key = (user_class, event.verb, event.requestURI)
            elif names is not None or namespaces is not None:
                # As the policy sees them ("" for none: a rule may list ""), or OTHER.
                namespace = ref.namespace or ""
                if namespaces is not None and namespace not in namespaces:
                    namespace = OTHER
                # The name is the one the policy saw (request_name, inlined: this runs per event).
                name = None
                if names is not None:
                    name = "" if event.verb == "create" and not ref.subresource else ref.name or ""
                    if name not in names:
                        name = OTHER
                key = (user_class, event.verb, ref.resource, ref.apiGroup, ref.subresource,
                       None if namespaces is None else namespace, None if names is None else name)
            else:
                key = (user_class, event.verb, ref.resource, ref.apiGroup, ref.subresource)
            value = cache.get(key)
            if value is None:
                value = self._miss(event, key, user_class)
            append(value)
        return found

    def _miss(self, event: AuditEvent, key: tuple[Any, ...], user_class: _UserClass) -> Any:
        value = self._compute(event, request_attributes(event, user_class.user, user_class.groups))
        if len(self.cache) >= self.limit:
            self.cache.clear()
        self.cache[key] = value
        return value


# --- managed control planes: the envelopes their audit events come in -----------------------------
#
# GKE writes Kubernetes audit events as Cloud Audit Logs: a LogEntry whose ``protoPayload`` is a
# google.cloud.audit.AuditLog (``methodName`` io.k8s.<group>.<version>.<resource>[.<subresource>].<verb>,
# ``resourceName`` <group>/<version>[/namespaces/<ns>]/<resource>[/<name>[/<subresource>]] with the
# core group as "core", ``authenticationInfo.principalEmail``, ``requestMetadata``, ``request`` and
# ``response`` bodies, ``status`` a google.rpc.Status), the audit ID in ``operation.id``. The Event
# kube-apiserver wrote is not in it; :func:`unwrap` rebuilds the one the entry describes (what a
# policy looks at, the bodies, the user's email as its name; no groups: GKE does not log them).
# AKS diagnostic settings (categories kube-audit, kube-audit-admin) send a resource-log record per
# event whose ``properties.log`` is the Event's JSON line as kube-apiserver wrote it: :func:`unwrap`
# returns that line.

class _GkeAuthentication(Struct, gc=False):
    principalEmail: str | None = None


class _GkeRequestMetadata(Struct, gc=False):
    callerIp: str | None = None
    callerSuppliedUserAgent: str | None = None


class _GkeStatus(Struct, gc=False):
    code: int | None = None


class _GkeAuditLog(Struct, gc=False):
    methodName: str
    resourceName: str | None = None
    authenticationInfo: _GkeAuthentication | None = None
    requestMetadata: _GkeRequestMetadata | None = None
    status: _GkeStatus | None = None
    request: Raw = _ABSENT
    response: Raw = _ABSENT


class _GkeOperation(Struct, gc=False):
    id: str | None = None


class _GkeEntry(Struct, gc=False):
    protoPayload: _GkeAuditLog
    insertId: str | None = None
    timestamp: str | None = None
    operation: _GkeOperation | None = None


class _AksProperties(Struct, gc=False):
    log: str


class _AksRecord(Struct, gc=False):
    properties: _AksProperties


_decode_gke = msgspec.json.Decoder(_GkeEntry).decode
_decode_aks = msgspec.json.Decoder(_AksRecord).decode
_GKE_MARK = b'"protoPayload"'
_AKS_MARK = b'"properties"'
# google.rpc.Code -> the HTTP status kube-apiserver answers with (the codes GKE's entries carry
# for Kubernetes requests; any other failure is a 500).
_NAMESPACE_SUBRESOURCES = frozenset(("status", "finalize"))
_RPC_HTTP = {0: 200, 3: 400, 5: 404, 6: 409, 7: 403, 9: 422, 10: 409, 16: 401}


def envelope(line: bytes) -> bool:
    """Whether the line is a GKE LogEntry or an AKS resource-log record (a file's first line tells
    whether its lines need :func:`unwrap`; an Event that merely mentions ``"properties"`` in a body
    is not one)."""
    return (_GKE_MARK in line or _AKS_MARK in line) and unwrap(line) is not line


def unwrap(line: bytes) -> bytes:
    """The audit Event line (newline-terminated) a GKE LogEntry or an AKS record holds; any other
    line as it is (the reader then says what is wrong with it)."""
    if _GKE_MARK in line:
        try:
            return _gke_event(_decode_gke(line))
        except _DECODE_ERRORS:
            return line
    if _AKS_MARK in line:
        try:
            event = _decode_aks(line).properties.log
        except _DECODE_ERRORS:
            return line
        return event.rstrip("\n").encode() + b"\n"
    return line


def _gke_object_ref(resource_name: str) -> dict[str, str] | None:
    """objectRef from a GKE resourceName (None for a non-resource request)."""
    parts = resource_name.split("/")
    if len(parts) < 3:
        return None
    group, version, rest = ("" if parts[0] == "core" else parts[0]), parts[1], parts[2:]
    ref = {}
    # namespaces/<ns>/<resource>[/<name>[/<sub>]], except a Namespace's own subresources.
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in _NAMESPACE_SUBRESOURCES):
        ref["namespace"], rest = rest[1], rest[2:]
    ref["resource"] = rest[0]
    if len(rest) > 1:
        ref["name"] = rest[1]
    if group:
        ref["apiGroup"] = group
    ref["apiVersion"] = version
    if len(rest) > 2:
        ref["subresource"] = rest[2]
    return {key: ref[key] for key in ("resource", "namespace", "name", "apiGroup", "apiVersion", "subresource")
            if key in ref}


def _gke_event(entry: _GkeEntry) -> bytes:
    log = entry.protoPayload
    resource_name = log.resourceName or ""
    ref = _gke_object_ref(resource_name) if log.methodName.startswith("io.k8s.") else None
    level = "RequestResponse" if log.response else "Request" if log.request else "Metadata"
    event: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": level,
        "auditID": (entry.operation.id if entry.operation is not None else None) or entry.insertId or "",
        "stage": "ResponseComplete", "requestURI": "/" + resource_name,
        "verb": log.methodName.rsplit(".", 1)[-1],
    }
    if log.authenticationInfo is not None and log.authenticationInfo.principalEmail:
        event["user"] = {"username": log.authenticationInfo.principalEmail}
    metadata = log.requestMetadata
    if metadata is not None and metadata.callerIp:
        event["sourceIPs"] = [metadata.callerIp]
    if metadata is not None and metadata.callerSuppliedUserAgent:
        event["userAgent"] = metadata.callerSuppliedUserAgent
    if ref is not None:
        event["objectRef"] = ref
    code = log.status.code if log.status is not None and log.status.code is not None else 0
    event["responseStatus"] = {"metadata": {}, "code": _RPC_HTTP.get(code, 500)}
    if log.request:
        event["requestObject"] = log.request
    if log.response:
        event["responseObject"] = log.response
    if entry.timestamp:
        event["requestReceivedTimestamp"] = event["stageTimestamp"] = entry.timestamp
    return _encode(event) + b"\n"
