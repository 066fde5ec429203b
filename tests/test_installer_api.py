"""The installer's own API client (kaudit.installer.api) against a local HTTPS server.

The server has a certificate made here with openssl for 127.0.0.1; the client trusts only the CA
file in its service account folder, as in a pod. The real kube-apiserver side (approval GET, node
report apply) is covered by tests/realcluster.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kaudit.installer.api import SERVICE_ACCOUNT_DIR, ApiClient, ApiError, ConfigError, InCluster
from kaudit.installer.approval import Approval, ApprovalUnavailable, api_fetch
from kaudit.installer.lease import Identity, LeaseReporter, report_lease

TOKEN = "token-from-the-folder"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=kube-apiserver", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class Server:
    """Records each request; answers with ``replies`` in turn (status, body), the last one repeated."""

    def __init__(self, certificate: tuple[Path, Path], replies: list[tuple[int, dict]]):
        self.seen: list[dict] = []
        self.replies = replies
        self.delay = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as kube-apiserver

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                   "body": json.loads(body) if body else None})
                time.sleep(outer.delay)
                status, reply = outer.replies[min(len(outer.seen), len(outer.replies)) - 1]
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = _answer  # noqa: N815 - http.server's naming

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(certificate[0]), str(certificate[1]))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def account(tmp_path, certificate) -> Path:
    folder = tmp_path / "serviceaccount"
    folder.mkdir()
    (folder / "token").write_text(TOKEN + "\n")
    (folder / "ca.crt").write_bytes(certificate[0].read_bytes())
    return folder


def environment(account: Path, port: int) -> dict[str, str]:
    return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port),
            "KAUDIT_SERVICE_ACCOUNT_DIR": str(account)}


@pytest.fixture
def serve(certificate, account):
    started: list[Server] = []

    def start(*replies: tuple[int, dict]) -> tuple[Server, ApiClient]:
        server = Server(certificate, list(replies) or [(200, {})])
        started.append(server)
        return server, ApiClient(InCluster.from_environment(environment(account, server.port)), timeout=1.0)

    yield start
    for server in started:
        server.close()


def lease(node: str) -> dict:
    return report_lease(Identity("cluster", node, "kaudit-system", f"installer-{node}", f"uid-{node}"),
                        policy_file="/etc/kubernetes/audit-policies/policy.yaml", installed_hash="a" * 64,
                        installed_at=None, error="", now=datetime(2026, 12, 1, tzinfo=timezone.utc), lease_seconds=180)


def test_the_lease_reporter_sends_a_server_side_apply_patch_with_the_service_account_token(serve):
    server, client = serve((200, {}), (403, {"kind": "Status", "message": "leases is forbidden:\n  no"}))
    reporter = LeaseReporter(client)
    body = lease("cp-1")
    assert reporter.send(body) is True
    assert reporter.send(body) is False  # a refused request is logged, not raised
    first = server.seen[0]
    assert first["method"] == "PATCH"
    path, _, query = first["path"].partition("?")
    assert path == "/apis/coordination.k8s.io/v1/namespaces/kaudit-system/leases/kaudit-cluster-policy-cp-1"
    assert sorted(query.split("&")) == ["fieldManager=kaudit", "force=true"]
    assert first["headers"]["Content-Type"] == "application/apply-patch+yaml"
    assert first["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert first["body"] == body
    assert len(server.seen) == 2  # both on one kept-alive connection, nothing resent


def test_an_error_status_names_code_reason_and_the_servers_message_on_one_line(serve):
    _, client = serve((403, {"kind": "Status", "message": "auditcollections is forbidden:\n  User x"}))
    with pytest.raises(ApiError) as info:
        client.get("/apis/kaudit.dev/v1alpha1/auditcollections/cluster")
    assert (info.value.status, info.value.reason) == (403, "Forbidden")
    assert str(info.value) == "403 Forbidden: auditcollections is forbidden: User x"


def test_the_approval_reads_the_collection_and_a_missing_one_is_none(serve):
    collection = {"kind": "AuditCollection", "metadata": {"name": "cluster"}, "status": {"policy": {"fullHash": "f"}}}
    server, client = serve((200, collection), (404, {"kind": "Status", "reason": "NotFound"}))
    fetch = api_fetch(client)
    assert fetch("cluster") == collection
    assert fetch("gone") is None
    assert [s["path"] for s in server.seen] == ["/apis/kaudit.dev/v1alpha1/auditcollections/cluster",
                                                "/apis/kaudit.dev/v1alpha1/auditcollections/gone"]


def test_a_rotated_token_is_used_from_the_next_request_on(serve, account):
    server, client = serve()
    client.get("/api/v1/namespaces")
    (account / "token").write_text("rotated")
    client.get("/api/v1/namespaces")
    assert [s["headers"]["Authorization"] for s in server.seen] == [f"Bearer {TOKEN}", "Bearer rotated"]


def test_a_hung_server_is_an_error_within_the_timeout_and_the_next_request_works(serve):
    server, patient = serve()
    client = ApiClient(patient.config, timeout=0.3)
    server.delay = 1.0
    started = time.monotonic()
    with pytest.raises(OSError):  # socket.timeout is an OSError
        client.get("/apis/kaudit.dev/v1alpha1/auditcollections/cluster")
    assert time.monotonic() - started < 0.9
    server.delay = 0.0
    assert client.get("/apis/kaudit.dev/v1alpha1/auditcollections/cluster") == {}
    # Through the approval, the same hang is "cannot read", never an approval.
    server.delay = 1.0
    with pytest.raises(ApprovalUnavailable, match="cannot read AuditCollection cluster"):
        Approval("cluster", api_fetch(client)).check(b"rules: []\n")


def test_a_connection_the_server_closed_meanwhile_is_opened_again_once(serve):
    server, client = serve()
    client.get("/api/v1/namespaces")
    assert client._connection is not None and client._connection.sock is not None
    client._connection.sock.shutdown(socket.SHUT_RDWR)  # as a server closing an idle connection
    assert client.get("/api/v1/namespaces") == {}
    assert len(server.seen) == 2


def test_only_the_service_account_ca_is_trusted(serve, account, tmp_path):
    server, _ = serve()
    other = tmp_path / "other"
    other.mkdir()
    (other / "token").write_text(TOKEN)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=other", "-keyout", str(tmp_path / "k"), "-out", str(other / "ca.crt")],
                   check=True, capture_output=True)
    client = ApiClient(InCluster.from_environment(environment(other, server.port)), timeout=1.0)
    with pytest.raises(ssl.SSLCertVerificationError):
        client.get("/api/v1/namespaces")
    assert server.seen == []


@pytest.mark.parametrize("change, message", [
    ({"KUBERNETES_SERVICE_HOST": ""}, "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set"),
    ({"KUBERNETES_SERVICE_PORT": "https"}, "KUBERNETES_SERVICE_PORT is not a port number: 'https'"),
    ({"token": None}, "cannot read the service account token"),
    ({"token": ""}, "is empty"),
    ({"ca.crt": None}, "no service account CA at"),
])
def test_missing_credentials_are_one_line(account, change, message):
    env = environment(account, 6443)
    for name, value in change.items():
        if name.startswith("KUBERNETES"):
            env[name] = value
        elif value is None:
            (account / name).unlink()
        else:
            (account / name).write_text(value)
    with pytest.raises(ConfigError) as info:
        InCluster.from_environment(env)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.skipif(Path(SERVICE_ACCOUNT_DIR).exists(), reason="running in a pod")
def test_without_kaudit_service_account_dir_the_pods_own_mount_is_read():
    with pytest.raises(ConfigError, match=f"{SERVICE_ACCOUNT_DIR}/token"):
        InCluster.from_environment({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"})
