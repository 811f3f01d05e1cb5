"""Liveness, readiness and metrics: what Kubernetes and Prometheus ask."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from escalator.api.keys import METRICS, STORE
from escalator.api.problems import Problem
from escalator.errors import StoreUnavailable
from escalator.store import OUTBOX_KINDS

__all__ = ["DRAIN", "Drain", "routes"]

routes = web.RouteTableDef()


@dataclass
class Drain:
    """The service's shutdown: once started, readiness fails and the rest has a deadline."""

    deadline: float | None = None  # on the monotonic clock

    @property
    def draining(self) -> bool:
        """Whether the shutdown has started."""
        return self.deadline is not None

    def start(self, grace: float) -> None:
        """Fail readiness from now on; everything must be closed ``grace`` seconds from now."""
        if self.deadline is None:
            self.deadline = time.monotonic() + grace

    def left(self, default: float) -> float:
        """Seconds left before the deadline (never negative); ``default`` when not draining."""
        if self.deadline is None:
            return default
        return max(0.0, self.deadline - time.monotonic())


DRAIN = web.AppKey("drain", Drain)


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    """Alive: the event loop answers. Never depends on the database."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready: not shutting down, the database answers and its schema is current."""
    if request.app[DRAIN].draining:
        # First thing on SIGTERM, while requests are still served: load balancers stop
        # sending new ones here before the listener closes.
        raise Problem(503, "draining: the service is shutting down", headers={"Retry-After": "5"})
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
