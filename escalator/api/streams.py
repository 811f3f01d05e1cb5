"""``GET /escalations/{id}/stream``: server-sent events of an escalation's status changes.

Changes written by this process wake the stream at once (the store's change feed); on
PostgreSQL, so do another replica's, through LISTEN/NOTIFY (store/notify.py). A slow poll of the
store remains as the safety net for a notification lost while the listener reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field

from aiohttp import web

from escalator.api.auth import require_api_key
from escalator.api.keys import METRICS, SETTINGS, STORE
from escalator.api.problems import Problem
from escalator.domain.changes import StatusChange, change_body, status_changes
from escalator.domain.escalation import Escalation
from escalator.domain.ids import EscalationId
from escalator.errors import EscalationNotFound, StoreUnavailable
from escalator.logs import get_logger
from escalator.settings import Settings

__all__ = ["STREAMS", "Streams", "install_streams", "routes"]

routes = web.RouteTableDef()
_log = get_logger(__name__)


@dataclass
class Streams:
    """The open streams: bounded in number, and ended when the app shuts down."""

    limit: int
    open: int = 0
    closing: asyncio.Event = field(default_factory=asyncio.Event)


STREAMS = web.AppKey("streams", Streams)


def install_streams(app: web.Application, settings: Settings) -> None:
    """Bound the app's streams and end them on shutdown."""
    app[STREAMS] = Streams(limit=settings.max_streams)

    async def end_streams(app: web.Application) -> None:
        app[STREAMS].closing.set()

    app.on_shutdown.append(end_streams)


def _last_event_id(request: web.Request) -> int | None:
    value = request.headers.get("Last-Event-ID", "").strip()
    return int(value) if value.isdigit() else None


def _frame(escalation: Escalation, change: StatusChange) -> bytes:
    data = json.dumps(change_body(escalation, change), separators=(",", ":"))
    return f"id: {change.position}\nevent: status\ndata: {data}\n\n".encode()


class _Gone(Exception):
    """The client went away."""


async def _write(request: web.Request, response: web.StreamResponse, data: bytes) -> None:
    if request.transport is None or request.transport.is_closing():
        raise _Gone()
    try:
        await response.write(data)
    except ConnectionError as exc:
        raise _Gone() from exc


@routes.get("/escalations/{escalation_id}/stream")
async def stream_escalation(request: web.Request) -> web.StreamResponse:
    """Each status change as an event (the current state first) until the terminal one."""
    settings = request.app[SETTINGS]
    require_api_key(request, settings.api_keys)
    escalation_id = EscalationId(request.match_info["escalation_id"])
    store, streams = request.app[STORE], request.app[STREAMS]
    escalation = await store.get_escalation(escalation_id)
    if escalation is None:
        raise EscalationNotFound(f"no escalation has the id {escalation_id!r}")
    if streams.open >= streams.limit:
        raise Problem(503, "too many streams are open; retry", headers={"Retry-After": "5"})
    streams.open += 1
    request.app[METRICS].streams_open.inc()
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        with contextlib.suppress(_Gone):
            await _follow(request, response, escalation, settings, streams)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response
    finally:
        streams.open -= 1
        request.app[METRICS].streams_open.dec()


async def _follow(
    request: web.Request,
    response: web.StreamResponse,
    escalation: Escalation,
    settings: Settings,
    streams: Streams,
) -> None:
    store = request.app[STORE]
    last = _last_event_id(request)
    with store.changes.subscribe(escalation.id) as changed:
        if last is None:
            # The first event is the current state, whatever came before it.
            last = status_changes(escalation)[-1].position - 1
        written = time.monotonic()
        while True:
            changed.clear()
            for change in status_changes(escalation, after=last):
                await _write(request, response, _frame(escalation, change))
                last, written = change.position, time.monotonic()
            if escalation.status.is_terminal or streams.closing.is_set():
                return
            heartbeat_due = written + settings.stream_heartbeat_seconds - time.monotonic()
            wait = max(0.0, min(settings.stream_poll_seconds, heartbeat_due))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await _first_of(changed, streams.closing)
            if time.monotonic() - written >= settings.stream_heartbeat_seconds:
                await _write(request, response, b": heartbeat\n\n")
                written = time.monotonic()
            try:
                reread = await store.get_escalation(escalation.id)
            except StoreUnavailable:
                _log.warning("stream.store_unavailable", escalation_id=escalation.id)
                reread = escalation
            if request.transport is None or request.transport.is_closing():
                return
            escalation = reread or escalation


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
