"""The /metrics HTTP endpoint (aiohttp, which kopf already depends on)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from kaudit.reconcile.metrics import Metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_app(metrics: Metrics) -> web.Application:
    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    return app


async def serve_metrics(metrics: Metrics, port: int, host: str = "0.0.0.0") -> None:
    runner = web.AppRunner(metrics_app(metrics), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
