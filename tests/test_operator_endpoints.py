"""The liveness endpoint `kaudit run` hands to kopf answers while the operator runs."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from operator_support import ApplyEmulator, prepare, running_operator

pytestmark = pytest.mark.kmock(cls=ApplyEmulator)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def get_status(url: str, attempts: int = 200) -> int:
    """The HTTP status of ``url``, waiting for the server to listen (kopf starts it next to the watches)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(attempts):
            try:
                async with session.get(url) as response:
                    return response.status
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.01)
    raise AssertionError(f"no answer from {url}")


async def test_liveness_endpoint_answers_while_the_operator_runs(kmock):
    prepare(kmock)
    # `kaudit run --liveness-port N` gives kopf http://0.0.0.0:N/healthz (tests/test_operator_cli.py).
    url = f"http://127.0.0.1:{free_port()}/healthz"
    async with running_operator(kmock, liveness_endpoint=url):
        assert await get_status(url) == 200
