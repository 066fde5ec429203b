"""A small, typed, asynchronous Kubernetes API client: every call kaudit's operator makes.

Why aiohttp rather than the ``kubernetes`` package in a thread executor:

* kopf already runs on aiohttp in one event loop; the operator's own calls share that loop, so
  there is no thread pool, no second connection pool and no second set of credentials to load;
* importing the ``kubernetes`` package's generated models costs tens of MiB of memory, and the
  operator's idle resident memory target is small (see bench/bench_operator.py);
* server-side apply, JSON merge patches and the status subresource are plain HTTP requests with a
  content type; the generated client adds nothing for them.

Credentials are kopf's own :class:`kopf.ConnectionInfo` (in-cluster service account or a
kubeconfig, as kopf's login handlers produce them), so the operator authenticates once, the same
way for kopf's watches and for its own writes.

Retries: 409, 429, 5xx, timeouts and connection errors are retried with exponential backoff
(``Retry-After`` is honoured for 429); after the last attempt :class:`TransientApiError` is raised
and the caller (a kopf handler) turns it into a ``kopf.TemporaryError`` so kopf retries later.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import random
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

import aiohttp

from kaudit.errors import KauditError
from kaudit.k8s.resources import FIELD_MANAGER, Resource, resource_of

JSON = dict[str, Any]

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"
JSON_PATCH_CONTENT_TYPE = "application/json-patch+json"

RETRIABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})

# (method, path, status or 0 for a transport error, seconds): for metrics and benchmarks.
RequestObserver = Callable[[str, str, int, float], None]


class ApiError(KauditError):
    def __init__(self, status: int, reason: str, message: str):
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"Kubernetes API error {status} {reason}: {message}")


class TransientApiError(ApiError):
    """The API kept failing with a retriable error; worth trying again later."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        backoff: float = min(self.first_delay * (2 ** attempt), self.max_delay)
        return backoff * (0.5 + random.random() / 2)  # jitter: replicas and objects do not retry in step


@dataclass
class Connection:
    """Where the API server is and how to authenticate: built from kopf's ConnectionInfo."""

    server: str
    session: aiohttp.ClientSession

    @classmethod
    def from_connection_info(cls, info: Any, *, force_close: bool = False) -> "Connection":
        headers = dict(info.as_http_headers())
        headers.setdefault("User-Agent", "kaudit-operator")
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=info.as_ssl_context(), force_close=force_close),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=30),
        )
        return cls(server=info.server.rstrip("/"), session=session)


class ApiClient:
    def __init__(
        self,
        connection: Connection,
        *,
        retry: RetryPolicy = RetryPolicy(),
        observer: RequestObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self._connection = connection
        self._retry = retry
        self._observer = observer
        self._sleep = sleep

    async def close(self) -> None:
        await self._connection.session.close()

    # --- reads -------------------------------------------------------------------------------

    async def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        return await self._request("GET", resource.path(namespace, name), missing_ok=True)

    async def list(
        self, resource: Resource, *, namespace: str | None = None, label_selector: str | None = None
    ) -> builtins.list[JSON]:
        """Objects of a resource; an unknown resource (CRD not installed) lists as empty."""
        items, _ = await self.list_versioned(resource, namespace=namespace, label_selector=label_selector)
        return items

    async def list_versioned(
        self, resource: Resource, *, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[builtins.list[JSON], str]:
        """:meth:`list`, and the list's resourceVersion, from which a watch misses nothing."""
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self._request("GET", resource.path(namespace), params=params, missing_ok=True)
        if result is None:
            return [], ""
        kind = resource.kind
        items = result.get("items") or []
        version = str((result.get("metadata") or {}).get("resourceVersion") or "")
        # List items come without apiVersion/kind; put them back so bodies are self-describing.
        return [{"apiVersion": resource.api_version, "kind": kind, **item} for item in items], version

    async def watch(
        self, resource: Resource, *, namespace: str | None = None, label_selector: str | None = None,
        resource_version: str | None = None, timeout_seconds: int = 300,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``{"type": ..., "object": ...}``) until the server ends the stream.

        No retries here: the caller lists again and resumes (a watch that failed may have
        missed events). A non-2xx answer raises :class:`ApiError`.
        """
        params = {"watch": "true", "timeoutSeconds": str(timeout_seconds)}
        if label_selector:
            params["labelSelector"] = label_selector
        if resource_version:
            params["resourceVersion"] = resource_version
        path = resource.path(namespace)
        started = time.monotonic()
        # The session's 30 s total timeout would cut every watch: the server's timeoutSeconds ends it.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout_seconds + 30)
        async with self._connection.session.get(self._connection.server + path, params=params,
                                                timeout=timeout) as response:
            self._observe("GET", path, response.status, started)
            if not 200 <= response.status < 300:
                raise ApiError(response.status, *_status_reason(response.status, await response.text()))
            # One JSON event per line; split by hand (aiohttp's readline refuses a line over 512 KiB).
            pending = b""
            async for chunk in response.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if pending.strip():
                yield json.loads(pending)

    # --- writes ------------------------------------------------------------------------------

    async def apply(self, body: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply ``body`` as field manager ``kaudit``.

        ``force`` takes over fields another manager set to a different value; kaudit forces only
        the fields it renders, so the user keeps every field kaudit does not name.
        """
        resource = resource_of(body)
        meta = body["metadata"]
        params = {"fieldManager": FIELD_MANAGER}
        if force:
            params["force"] = "true"
        # JSON is YAML: the apply content type accepts it as is, byte-for-byte reproducible.
        payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        result = await self._request(
            "PATCH", resource.path(meta.get("namespace"), meta["name"]),
            params=params, data=payload, content_type=APPLY_CONTENT_TYPE,
        )
        return result or {}

    async def merge_patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
        retry_conflicts: bool = True,
    ) -> dict[str, Any] | None:
        """A JSON merge patch; None when the object is gone. Used for status and restores.

        ``retry_conflicts=False`` for a patch guarded by ``metadata.resourceVersion``: resent as it
        is, it meets the same 409; the caller reads again and computes a new one."""
        payload = json.dumps(patch, sort_keys=True, separators=(",", ":")).encode()
        return await self._request(
            "PATCH", resource.path(namespace, name, subresource),
            params={"fieldManager": FIELD_MANAGER}, data=payload, content_type=MERGE_CONTENT_TYPE,
            missing_ok=True, retry_conflicts=retry_conflicts,
        )

    async def json_patch(self, resource: Resource, namespace: str | None, name: str,
                         operations: builtins.list[JSON]) -> dict[str, Any] | None:
        """A JSON patch (RFC 6902), its ``test`` operations guarding what it changes; None when gone.

        Used where a merge patch cannot say it: one item of a list, or kaudit's own managedFields entry.
        """
        payload = json.dumps(operations, sort_keys=True, separators=(",", ":")).encode()
        return await self._request(
            "PATCH", resource.path(namespace, name),
            params={"fieldManager": FIELD_MANAGER}, data=payload, content_type=JSON_PATCH_CONTENT_TYPE,
            missing_ok=True,
        )

    async def delete(self, resource: Resource, namespace: str | None, name: str) -> bool:
        """Delete (background propagation); False when it was already gone."""
        payload = json.dumps({"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"})
        result = await self._request(
            "DELETE", resource.path(namespace, name), data=payload.encode(),
            content_type="application/json", missing_ok=True,
        )
        return result is not None

    async def create(self, resource: Resource, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        result = await self._request(
            "POST", resource.path(namespace), data=payload, content_type="application/json",
            retry_conflicts=False,
        )
        return result or {}

    # --- plumbing ----------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        content_type: str | None = None,
        missing_ok: bool = False,
        retry_conflicts: bool = True,
    ) -> dict[str, Any] | None:
        url = self._connection.server + path
        headers = {"Content-Type": content_type} if content_type else {}
        last: ApiError | None = None
        for attempt in range(self._retry.attempts):
            started = time.monotonic()
            retry_after: float | None = None
            try:
                async with self._connection.session.request(
                    method, url, params=params, data=data, headers=headers
                ) as response:
                    status = response.status
                    text = await response.text()
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                self._observe(method, path, 0, started)
                last = TransientApiError(0, type(exc).__name__, str(exc) or "connection failed")
            else:
                self._observe(method, path, status, started)
                if status == 404 and missing_ok:
                    return None
                if 200 <= status < 300:
                    return json.loads(text) if text else {}
                reason, message = _status_reason(status, text)
                if status not in RETRIABLE_STATUSES or (status == 409 and not retry_conflicts):
                    raise ApiError(status, reason, message)
                last = TransientApiError(status, reason, message)
            if attempt + 1 < self._retry.attempts:
                await self._sleep(self._retry.delay(attempt, retry_after))
        assert last is not None
        raise last

    def _observe(self, method: str, path: str, status: int, started: float) -> None:
        if self._observer is not None:
            self._observer(method, path, status, time.monotonic() - started)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _status_reason(status: int, text: str) -> tuple[str, str]:
    try:
        payload = json.loads(text)
    except ValueError:
        return str(status), text[:200]
    if not isinstance(payload, dict):
        return str(status), text[:200]
    return str(payload.get("reason") or status), str(payload.get("message") or "")
