"""The Events API, and the control endpoints for the clock and the callbacks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from aiohttp import web

from escalator.simulator.callbacks import callback_faults_from_json
from escalator.simulator.clock import VirtualClock
from escalator.simulator.context import STATE_KEY, query, renderer, respond, state_of, workspace_of
from escalator.simulator.errors import bad_parameter, not_found
from escalator.simulator.events import EventRecord
from escalator.simulator.paging import page_body
from escalator.simulator.params import Params
from escalator.simulator.resources import iso8601

__all__ = [
    "advance_clock",
    "callback_deliveries",
    "close_callbacks",
    "fetch_event",
    "list_events",
    "set_callback_faults",
]

# Events API: `Minutes` defaults to 15; events are kept 30 days (43,200 minutes).
DEFAULT_MINUTES = 15
MAX_MINUTES = 43_200
# Query parameter -> the callback field it filters on.
_FIELD_FILTERS = {
    "TaskSid": "TaskSid",
    "ReservationSid": "ReservationSid",
    "WorkerSid": "WorkerSid",
    "TaskQueueSid": "TaskQueueSid",
    "WorkflowSid": "WorkflowSid",
}


def _date(params: Params, name: str) -> datetime | None:
    value = params.text(name)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise bad_parameter(f"Invalid {name}: '{value}' is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise bad_parameter(f"Invalid {name}: '{value}' needs a time zone (GMT)")
    return moment


def _matches(record: EventRecord, params: Params, channel: str | None) -> bool:
    for parameter, field in _FIELD_FILTERS.items():
        wanted = params.text(parameter)
        if wanted is not None and record.get(field) != wanted:
            return False
    event_type = params.text("EventType")
    if event_type is not None and record.event_type != event_type:
        return False
    sid = params.text("Sid")
    if sid is not None and record.sid != sid:
        return False
    return channel is None or channel in (
        record.get("TaskChannelSid"),
        record.get("TaskChannelUniqueName"),
    )


async def list_events(request: web.Request) -> web.StreamResponse:
    """GET .../Events: newest first, within `Minutes` (15) or StartDate/EndDate, filtered."""
    workspace = workspace_of(request)
    state = state_of(request)
    params = query(request)
    start = _date(params, "StartDate")
    end = _date(params, "EndDate")
    minutes = params.integer("Minutes", minimum=1, maximum=MAX_MINUTES)
    now = state.clock.now()
    if start is None:
        start = now - timedelta(minutes=minutes or DEFAULT_MINUTES)
    channel = params.text("TaskChannel")
    items = [
        record
        for record in state.events
        if record.workspace_sid == workspace.sid
        and record.date >= start
        and (end is None or record.date <= end)
        and _matches(record, params, channel)
    ]
    items.reverse()
    return respond(page_body(request, "events", items, renderer(request).event))


async def fetch_event(request: web.Request) -> web.StreamResponse:
    """GET .../Events/{sid}."""
    workspace = workspace_of(request)
    record = state_of(request).events.get(workspace.sid, request.match_info["sid"])
    if record is None:
        raise not_found(request.path)
    return respond(renderer(request).event(record))


async def advance_clock(request: web.Request) -> web.StreamResponse:
    """POST {control}/clock/advance `{"seconds": 30}`: move a virtual clock, running due timers."""
    clock = state_of(request).clock
    if not isinstance(clock, VirtualClock):
        return web.json_response({"error": "the simulator runs on the real clock"}, status=400)
    try:
        body = await request.json()
    except ValueError:
        body = None
    seconds = body.get("seconds") if isinstance(body, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        return web.json_response({"error": "'seconds' must be a number >= 0"}, status=400)
    await clock.advance(seconds)
    return web.json_response({"now": iso8601(clock.now())})


async def set_callback_faults(request: web.Request) -> web.StreamResponse:
    """POST {control}/callbacks/faults: drop/duplicate/delay probabilities, reorder, seed."""
    try:
        faults, seed = callback_faults_from_json(await request.json())
    except ValueError as error:
        return web.json_response({"error": str(error)}, status=400)
    callbacks = state_of(request).callbacks
    callbacks.set_faults(faults, seed=seed)
    return web.json_response({**faults.to_json(), "seed": callbacks.seed})


async def callback_deliveries(request: web.Request) -> web.StreamResponse:
    """GET {control}/callbacks/deliveries: every callback sent, dropped or failed, in order."""
    deliveries = state_of(request).callbacks.deliveries
    return web.json_response(
        {
            "deliveries": [
                {
                    "kind": d.kind,
                    "url": d.url,
                    "outcome": d.outcome,
                    "status": d.status,
                    "event_type": d.event_type,
                    "params": d.params,
                }
                for d in deliveries
            ]
        }
    )


async def close_callbacks(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: stop sending callbacks and close their HTTP session with the app."""
    yield
    await app[STATE_KEY].callbacks.close()
