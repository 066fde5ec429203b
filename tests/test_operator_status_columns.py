"""The status the running operator writes: it fits the CRD's status schema (the API server would
prune any field the schema lacks) and every printer column of `kubectl get ac` finds a value."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import pytest
import yaml

from operator_support import (ApplyEmulator, COLLECTIONS, closed_schema, collection, condition, fake_installer, prepare,
                              running_operator, uncovered_requests, until)
from render_support import CRD_PATH

pytestmark = pytest.mark.kmock(cls=ApplyEmulator)

[VERSION] = yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"]


def column_value(obj: dict, json_path: str) -> object:
    """The two JSONPath shapes the CRD's printer columns use: `.a.b.c` and
    `.a.b[?(@.key=="value")].c` (kubectl's JSONPath, reduced to what the columns need)."""
    value: object = obj
    for step in re.findall(r'\.(\w+)(\[\?\(@\.\w+=="[^"]*"\)\])?', json_path):
        name, selector = step
        value = (value or {}).get(name) if isinstance(value, dict) else None
        if selector:
            key, wanted = re.match(r'\[\?\(@\.(\w+)=="([^"]*)"\)\]', selector).groups()
            value = next((item for item in value or [] if item.get(key) == wanted), None)
    return value


def test_column_reader_follows_both_shapes():
    obj = {"status": {"conditions": [{"type": "A", "status": "x"}, {"type": "Ready", "status": "True"}],
                      "policy": {"hash": "abc"}}}
    assert column_value(obj, '.status.conditions[?(@.type=="Ready")].status') == "True"
    assert column_value(obj, ".status.policy.hash") == "abc"
    assert column_value(obj, ".status.policy.missing") is None


@pytest.fixture
def server(kmock):
    prepare(kmock)
    yield kmock
    assert uncovered_requests(kmock) == []  # every request is one the RBAC table allows


async def test_written_status_fits_the_schema_and_fills_every_printer_column(server):
    body = collection()
    body["spec"].setdefault("policy", {})["profile"] = "Default"  # the API server's default (kmock has none)
    body["spec"].setdefault("agent", {}).setdefault("mode", "Managed")
    async with running_operator(server):
        response = await server.post("/apis/kaudit.dev/v1alpha1/auditcollections", json=body)
        assert response.status == 200
        installer = asyncio.create_task(fake_installer(server))
        try:
            await until(lambda: condition(server, "PolicyInstalled").get("status") == "True")
        finally:
            installer.cancel()
    live = json.loads(json.dumps(server.objects[COLLECTIONS, None, "cluster"], default=dict))  # kmock's views → dicts
    status = live["status"]
    jsonschema.validate(status, closed_schema(VERSION["schema"]["openAPIV3Schema"]["properties"]["status"]))
    for column in VERSION["additionalPrinterColumns"]:
        assert column_value(live, column["jsonPath"]) not in (None, ""), column["name"]
    # The Policy column shows the short hash the operator writes (12 hex digits of fullHash).
    assert re.fullmatch(r"[0-9a-f]{12}", column_value(live, ".status.policy.hash"))
    assert status["policy"]["fullHash"].startswith(status["policy"]["hash"])
    # kstatus: Ready carries the generation it describes, and so does the status.
    ready = condition(server, "Ready")
    assert ready["observedGeneration"] == status["observedGeneration"] == live["metadata"].get("generation", 1)
