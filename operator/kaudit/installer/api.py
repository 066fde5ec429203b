"""The installer's Kubernetes API client: HTTPS with the pod's service account, standard library only.

The installer sends two kinds of request: a GET of its AuditCollection (the approval, before every
write) and a server-side apply of its node report Lease. The kubernetes client package would do
that too, but importing it costs several tenths of a second at every installer start, which is on
the path from a new policy to ``Ready``, and about 126 MB of the image. This client does just
those two requests, with a timeout on every one (a hung API server must not stop the install loop).

Credentials are the in-cluster ones, as every pod has them: ``KUBERNETES_SERVICE_HOST`` and
``KUBERNETES_SERVICE_PORT`` name the API server; the token and CA are files in the service account
folder. The token is read again for each request, since the kubelet rotates a projected token in
place.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlencode

# Where the pod's service account token and CA are mounted; KAUDIT_SERVICE_ACCOUNT_DIR points
# elsewhere (a test playing the installer outside a pod, a token projected at another path).
SERVICE_ACCOUNT_DIR_ENV = "KAUDIT_SERVICE_ACCOUNT_DIR"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
REQUEST_TIMEOUT = 5.0  # seconds for connecting, sending and each read of one request
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"  # server-side apply (JSON is YAML)


class ConfigError(Exception):
    """The pod's API credentials are missing or unreadable."""


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str = ""):
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}" + (f": {message}" if message else ""))


@dataclass(frozen=True)
class InCluster:
    """Where the API server is and where the service account's files are."""

    host: str
    port: int
    token_file: Path
    ca_file: Path

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> "InCluster":
        env = os.environ if environ is None else environ
        host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise ConfigError("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
        if not port.isdigit():
            raise ConfigError(f"KUBERNETES_SERVICE_PORT is not a port number: {port!r}")
        folder = Path(env.get(SERVICE_ACCOUNT_DIR_ENV) or SERVICE_ACCOUNT_DIR)
        config = cls(host, int(port), folder / "token", folder / "ca.crt")
        config.token()  # fail now, not at the first request
        if not config.ca_file.is_file():
            raise ConfigError(f"no service account CA at {config.ca_file}")
        return config

    def token(self) -> str:
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the service account token {self.token_file}: "
                              f"{exc.strerror or exc}") from None
        if not token:
            raise ConfigError(f"the service account token {self.token_file} is empty")
        return token


class ApiClient:
    """One kept-alive HTTPS connection to the API server; not for use from several threads."""

    def __init__(self, config: InCluster, *, timeout: float = REQUEST_TIMEOUT):
        self.config = config
        self.timeout = timeout
        try:
            self._context = ssl.create_default_context(cafile=str(config.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"unusable service account CA {config.ca_file}: {exc}") from None
        self._connection: http.client.HTTPSConnection | None = None

    @classmethod
    def in_cluster(cls) -> "ApiClient":
        return cls(InCluster.from_environment())

    def get(self, path: str) -> Any:
        """The object at ``path``; None when it does not exist (404)."""
        status, reason, data = self._request("GET", path)
        if status == 404:
            return None
        return _decoded(status, reason, data)

    def apply(self, path: str, body: Mapping[str, Any], *, field_manager: str) -> Any:
        """Server-side apply of ``body`` at ``path``, taking over conflicting fields (force)."""
        query = urlencode({"fieldManager": field_manager, "force": "true"})
        status, reason, data = self._request("PATCH", f"{path}?{query}", json.dumps(body).encode(),
                                             APPLY_CONTENT_TYPE)
        return _decoded(status, reason, data)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str | None = None) -> tuple[int, str, bytes]:
        headers = {"Authorization": f"Bearer {self.config.token()}", "Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        # Both requests are idempotent: sent once more when a kept-alive connection turns out to
        # have been closed by the server meanwhile, never after a timeout.
        reused = self._connection is not None
        try:
            return self._send(method, path, body, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()
            if not reused:
                raise
            return self._send(method, path, body, headers)

    def _send(self, method: str, path: str, body: bytes | None,
              headers: dict[str, str]) -> tuple[int, str, bytes]:
        if self._connection is None:
            self._connection = http.client.HTTPSConnection(self.config.host, self.config.port,
                                                           timeout=self.timeout, context=self._context)
        try:
            self._connection.request(method, path, body=body, headers=headers)
            response = self._connection.getresponse()
            return response.status, response.reason, response.read()
        except BaseException:
            self.close()  # a half-done exchange leaves the connection unusable
            raise


def _decoded(status: int, reason: str, data: bytes) -> Any:
    if not 200 <= status < 300:
        raise ApiError(status, reason, _status_message(data))
    return json.loads(data) if data else None


def _status_message(data: bytes) -> str:
    """The message of a Kubernetes ``Status`` error body, on one line ("" when there is none)."""
    try:
        message = json.loads(data).get("message", "")
    except (ValueError, AttributeError):
        return ""
    return " ".join(str(message).split())
