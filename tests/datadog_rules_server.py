"""A local stand-in for Datadog's detection rules endpoints, on loopback, for the sync tests.

It serves what ``kaudit rules sync`` uses (list with pages, create, update, delete of
``/api/v2/security_monitoring/rules``), checks the two key headers, and checks every request body
with the official client's own models (``datadog_api_client``): a body the client's model does
not parse exactly, or with a key the model does not have, is answered 400 and recorded as a
violation. Responses are checked the same way against the response model before they are sent.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from datadog_api_client import Configuration
from datadog_api_client.model_utils import ModelSimple, OpenApiModel, validate_and_convert_types
from datadog_api_client.v2.model.security_monitoring_list_rules_response import SecurityMonitoringListRulesResponse
from datadog_api_client.v2.model.security_monitoring_rule_create_payload import SecurityMonitoringRuleCreatePayload
from datadog_api_client.v2.model.security_monitoring_rule_response import SecurityMonitoringRuleResponse
from datadog_api_client.v2.model.security_monitoring_rule_update_payload import SecurityMonitoringRuleUpdatePayload
from datadog_api_client.v2.model.security_monitoring_standard_rule_create_payload import (
    SecurityMonitoringStandardRuleCreatePayload,
)

RULES = "/api/v2/security_monitoring/rules"
_CONFIG = Configuration()


def strict_model(data: Any, kind: type) -> OpenApiModel:
    """``data`` as the client's model ``kind``; raises ValueError unless every key and value parses."""
    model = validate_and_convert_types(data, (kind,), ["body"], True, True, _CONFIG)
    _check(model, "body")
    return model


def _check(node: Any, path: str) -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check(item, f"{path}[{i}]")
        return
    if not isinstance(node, OpenApiModel):
        if isinstance(node, dict):
            raise ValueError(f"{path}: an object the client's model did not parse")
        return
    if getattr(node, "_unparsed", False):
        raise ValueError(f"{path}: {type(node).__name__} does not parse it")
    if isinstance(node, ModelSimple):  # an enum: its allowed values were checked when it was made
        return
    inner = node.get_oneof_instance() if hasattr(node, "get_oneof_instance") and node._composed_schemas else node
    if inner is not node:
        _check(inner, path)
        return
    extra = set(node._data_store) - set(node.attribute_map)
    if extra:
        raise ValueError(f"{path}: {type(node).__name__} has no field {', '.join(sorted(extra))}")
    for key, value in node._data_store.items():
        _check(value, f"{path}.{node.attribute_map[key]}")


@dataclass
class FakeDatadog:
    api_key: str = "test-api-key"
    app_key: str = "test-app-key"
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)  # (method, path with query, body)
    violations: list[str] = field(default_factory=list)
    url: str = ""
    throttled: int = 0  # the next this many requests are answered 429, as Datadog's rate limit does
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def writes(self) -> list[tuple[str, str, Any]]:
        return [r for r in self.requests if r[0] != "GET"]

    def add(self, payload: dict[str, Any]) -> str:
        """A rule as if someone had created it (the same checks as a POST)."""
        strict_model(payload, SecurityMonitoringStandardRuleCreatePayload)
        rule_id = f"r{next(self._ids):04d}"
        rule = json.loads(json.dumps(payload))
        for case in rule.get("cases", []):
            case.setdefault("notifications", [])  # what Datadog adds on its own
        rule.update(id=rule_id, createdAt=1767225600000, creationAuthorId=1, isDefault=False, isDeleted=False,
                    version=1, hasExtendedTitle=False, defaultTags=[], filters=[])
        self.rules[rule_id] = rule
        return rule_id


def _handler(state: FakeDatadog) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.headers.get("Content-Encoding") == "gzip":
                import gzip
                raw = gzip.decompress(raw)
            return json.loads(raw) if raw else None

        def _send(self, code: int, data: Any = None, model: type | None = None) -> None:
            if model is not None:
                try:
                    strict_model(data, model)
                except ValueError as exc:  # the fake's own bug: make it loud
                    state.violations.append(f"response: {exc}")
            raw = b"" if data is None else json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _handle(self, method: str) -> None:
            body = self._body() if method in ("POST", "PUT") else None
            state.requests.append((method, self.path, body))
            if state.throttled > 0:  # Datadog's answer past a rate limit: 429, and when the window resets
                state.throttled -= 1
                self.send_response(429)
                self.send_header("X-RateLimit-Reset", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if self.headers.get("DD-API-KEY") != state.api_key or \
                    self.headers.get("DD-APPLICATION-KEY") != state.app_key:
                return self._send(403, {"errors": ["Forbidden"]})
            url = urlsplit(self.path)
            rule_id = url.path[len(RULES) + 1:] if url.path.startswith(RULES + "/") else ""
            if url.path == RULES and method == "GET":
                return self._list(parse_qs(url.query))
            if url.path == RULES and method == "POST":
                return self._write(body, SecurityMonitoringRuleCreatePayload, None)
            if rule_id and rule_id not in state.rules:
                return self._send(404, {"errors": ["Not found"]})
            if rule_id and method == "PUT":
                return self._write(body, SecurityMonitoringRuleUpdatePayload, rule_id)
            if rule_id and method == "DELETE":
                del state.rules[rule_id]
                return self._send(204)
            return self._send(404, {"errors": ["Not found"]})

        def _list(self, query: dict[str, list[str]]) -> None:
            size = int(query.get("page[size]", ["10"])[0])
            number = int(query.get("page[number]", ["0"])[0])
            items = list(state.rules.values())
            page = items[number * size:(number + 1) * size]
            self._send(200, {"data": page, "meta": {"page": {"total_count": len(items),
                                                            "total_filtered_count": len(items)}}},
                       SecurityMonitoringListRulesResponse)

        def _write(self, body: Any, kind: type, rule_id: str | None) -> None:
            try:
                strict_model(body, kind)
            except ValueError as exc:
                state.violations.append(f"{self.command} {self.path}: {exc}")
                return self._send(400, {"errors": [str(exc)]})
            if rule_id is None:
                rule_id = state.add(body)
            else:
                rule = state.rules[rule_id]
                rule.update(json.loads(json.dumps(body)), version=rule["version"] + 1)
            self._send(200, state.rules[rule_id], SecurityMonitoringRuleResponse)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PUT(self) -> None:
            self._handle("PUT")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

    return Handler


class Server:
    def __init__(self, state: FakeDatadog) -> None:
        self.state = state
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        state.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeDatadog:
        self.thread.start()
        return self.state

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
