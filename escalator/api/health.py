"""Liveness, readiness and metrics: what Kubernetes and Prometheus ask."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from escalator.api.keys import METRICS, STORE
from escalator.api.problems import Problem
from escalator.errors import StoreUnavailable
from escalator.store import OUTBOX_KINDS

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    """Alive: the event loop answers. Never depends on the database."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready: the database answers and its schema is current."""
    store = request.app[STORE]
    await store.ping()
    if not await store.schema_is_current():
        raise Problem(
            503,
            "the database schema is not current: run 'escalator migrate'",
            headers={"Retry-After": "5"},
        )
    return web.json_response({"status": "ready"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    registry = request.app[METRICS]
    try:
        store = request.app[STORE]
        registry.outbox_backlog.set(await store.outbox_backlog())
        counts = await store.outbox_backlog_by_kind()
        for kind in sorted(OUTBOX_KINDS | counts.keys()):
            registry.outbox_backlog_by_kind.labels(kind=kind).set(counts.get(kind, 0))
    except StoreUnavailable:
        registry.store_unavailable.labels(where="metrics").inc()
    response = web.Response(body=generate_latest(registry.registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
