"""The real operator (kopf handlers + the real renderer) against kmock: create, update, drift,
delete, refusals, conflict, faults, restart. kmock lacks server-side apply: where the outcome
depends on it, the exact requests are asserted."""

from __future__ import annotations

import kmock
import pytest

from operator_support import (APPLY, ApplyEmulator, COLLECTIONS, body_of, collection, condition, describe, is_ready,
                              load_yaml, prepare, running_operator, status_of, until, writes)


pytestmark = pytest.mark.kmock(cls=ApplyEmulator)


@pytest.fixture
def server(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    prepare(kmock)
    return kmock


async def test_managed_create_applies_every_object_then_reports_ready(server):
    async with running_operator(server):
        start = len(list(server))
        await server.post("/apis/kaudit.dev/v1alpha1/auditcollections", json=collection())
        await until(lambda: is_ready(server))
    for r in writes(server, start):
        if 'auditcollections' in r.url.path: print(describe(r), r.body[:300])
