"""Where a Datadog attribute lives in a kube-apiserver audit event, and what records it.

Datadog's log pipeline for ``source:kubernetes.audit`` remaps four fields (``REMAPPED``); every
other field keeps its path, so ``@objectRef.resource`` reads ``objectRef.resource``. A remapped
field is moved, not copied: ``@verb`` finds nothing once the pipeline has run, and kaudit reports
such a term instead of letting it silently never match (:func:`moved_source`).

JSON objects are flattened the way Datadog searches them: a key that holds dots is reached by the
joined path (``@annotations.authorization.k8s.io/decision``), and a path through an array reaches
every element (``@requestObject.spec.containers.securityContext.privileged``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Iterator

# Datadog attribute -> where kube-apiserver writes it (facts: the kubernetes.audit pipeline).
REMAPPED: dict[str, tuple[str, ...]] = {
    "http.method": ("verb",),
    "http.status_code": ("responseStatus", "code"),
    "usr.name": ("user", "username"),
    "http.url_details.path": ("requestURI",),
}
_MOVED = {".".join(source): target for target, source in REMAPPED.items()}

# The audit level at which kube-apiserver starts writing a top-level field of the event.
BODY_LEVELS = {"requestObject": "Request", "responseObject": "RequestResponse"}


@lru_cache(maxsize=4096)  # coverage asks it about the same few attributes a million times
def moved_source(attribute: str) -> str | None:
    """The Datadog attribute that replaced ``attribute`` when the pipeline moved it, else None."""
    for source, target in _MOVED.items():
        if attribute == source or attribute.startswith(source + "."):
            return target
    return None


@lru_cache(maxsize=4096)
def needed_level(attribute: str) -> str:
    """The least audit level at which an event can carry ``attribute``."""
    return BODY_LEVELS.get(attribute.split(".", 1)[0], "Metadata")


def _walk(node: Any, segments: tuple[str, ...], i: int) -> Iterator[Any]:
    if type(node) is list:
        for item in node:
            yield from _walk(item, segments, i)
        return
    if i == len(segments):
        if node is not None:
            yield node
        return
    if type(node) is not dict:
        return
    key = segments[i]
    child = node.get(key)
    if child is not None:
        yield from _walk(child, segments, i + 1)
    # A key holding dots (annotation names): try the longer joined keys too.
    for j in range(i + 2, len(segments) + 1):
        key = f"{key}.{segments[j - 1]}"
        child = node.get(key)
        if child is not None:
            yield from _walk(child, segments, j)


def _uri_path(uri: Any) -> Any:
    return uri.partition("?")[0] if type(uri) is str else uri


def getter(attribute: str) -> Callable[[dict[str, Any]], list[Any]]:
    """A function returning the values ``@attribute`` has in an audit event, as Datadog stores it.

    Arrays are flattened into the list (a search matches any element); an attribute the pipeline
    moved away returns nothing; ``@http.url_details.path`` is ``requestURI`` without its query.
    """
    if moved_source(attribute):
        return lambda event: []
    source = REMAPPED.get(attribute)
    if source == ("requestURI",):
        return lambda event: [v for v in [_uri_path(event.get("requestURI"))] if v is not None]
    if source and len(source) == 2:
        outer, inner = source

        def remapped(event: dict[str, Any]) -> list[Any]:
            container = event.get(outer)
            value = container.get(inner) if type(container) is dict else None
            return [] if value is None else [value]

        return remapped
    if source:
        key = source[0]
        return lambda event: [] if event.get(key) is None else [event[key]]
    segments = tuple(attribute.split("."))
    if len(segments) == 1:
        key = segments[0]

        def top(event: dict[str, Any]) -> list[Any]:
            value = event.get(key)
            if value is None:
                return []
            return value if type(value) is list else [value]

        return top
    return lambda event: list(_walk(event, segments, 0))


ABSENT = object()  # what lookup() returns for an attribute the event does not have


def lookup(attribute: str) -> Callable[[dict[str, Any]], Any]:
    """Like :func:`getter`, faster on the common shapes: returns the value itself when the path
    leads through objects to one scalar, ``ABSENT`` when it leads nowhere, and the getter's list
    otherwise (arrays on the way, objects at the end, keys holding dots).

    Top-level keys of an audit event never hold dots, so a missing one is absent; deeper down a
    missing key may be the first part of a dotted key, and the general walk decides.
    """
    slow = getter(attribute)
    if moved_source(attribute):
        return lambda event: ABSENT
    source = REMAPPED.get(attribute)
    segments = source if source and source != ("requestURI",) else tuple(attribute.split("."))
    if source == ("requestURI",):
        def uri(event: dict[str, Any]) -> Any:
            value = event.get("requestURI")
            return ABSENT if value is None else _uri_path(value)
        return uri
    first, rest = segments[0], segments[1:]
    last = len(rest) - 1

    def fast(event: dict[str, Any]) -> Any:
        node = event.get(first)
        if node is None:
            return ABSENT
        for i, segment in enumerate(rest):
            if type(node) is not dict:
                return slow(event) or ABSENT
            child = node.get(segment)
            if child is None:
                return ABSENT if i == last else (slow(event) or ABSENT)
            node = child
        if type(node) in (list, dict):
            return slow(event) or ABSENT
        return node

    return fast


def source_path(attribute: str) -> tuple[str, ...] | None:
    """The keys leading to ``attribute`` in the event as kube-apiserver writes it; None for an
    attribute the pipeline moved away or rewrites (``@http.url_details.path``)."""
    if moved_source(attribute):
        return None
    source = REMAPPED.get(attribute)
    if source == ("requestURI",):
        return None
    return source or tuple(attribute.split("."))
