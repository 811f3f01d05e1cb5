"""Handlers for Reservations, under Tasks/{sid}/Reservations and Workers/{sid}/Reservations."""

from __future__ import annotations

from aiohttp import web

from escalator.simulator.context import form, query, renderer, respond, state_of, workspace_of
from escalator.simulator.engine import INSTRUCTIONS, TransitionError
from escalator.simulator.errors import bad_parameter, not_found
from escalator.simulator.etag import check_if_match, etag_headers
from escalator.simulator.paging import page_body
from escalator.simulator.state import Reservation, Workspace

__all__ = [
    "fetch_task_reservation",
    "fetch_worker_reservation",
    "list_task_reservations",
    "list_worker_reservations",
    "update_task_reservation",
    "update_worker_reservation",
]

STATUSES = (
    "pending",
    "accepted",
    "rejected",
    "timeout",
    "canceled",
    "rescinded",
    "wrapping",
    "completed",
)
# Form fields that choose what happens; every other field is an instruction parameter.
_CONTROL_FIELDS = frozenset({"ReservationStatus", "Instruction", "WorkerActivitySid"})


def _parent(request: web.Request, workspace: Workspace, via_worker: bool) -> str:
    if via_worker:
        sid = request.match_info["worker_sid"]
        if sid not in workspace.workers:
            raise not_found(request.path)
    else:
        sid = request.match_info["task_sid"]
        if sid not in workspace.tasks:
            raise not_found(request.path)
    return sid


def _reservation(request: web.Request, workspace: Workspace, via_worker: bool) -> Reservation:
    parent = _parent(request, workspace, via_worker)
    found = workspace.reservations.get(request.match_info["sid"])
    if found is None or (found.worker_sid if via_worker else found.task_sid) != parent:
        raise not_found(request.path)
    return found


async def _list(request: web.Request, *, via_worker: bool) -> web.StreamResponse:
    workspace = workspace_of(request)
    parent = _parent(request, workspace, via_worker)
    params = query(request)
    status = params.choice("ReservationStatus", STATUSES)
    worker_sid = None if via_worker else params.text("WorkerSid")
    items = [
        r
        for r in workspace.reservations.values()
        if (r.worker_sid if via_worker else r.task_sid) == parent
        and (status is None or r.status == status)
        and (worker_sid is None or r.worker_sid == worker_sid)
    ]
    render = renderer(request)
    return respond(
        page_body(
            request,
            "reservations",
            items,
            lambda r: render.reservation(workspace, r, via_worker=via_worker),
        )
    )


async def _fetch(request: web.Request, *, via_worker: bool) -> web.StreamResponse:
    workspace = workspace_of(request)
    reservation = _reservation(request, workspace, via_worker)
    body = renderer(request).reservation(workspace, reservation, via_worker=via_worker)
    return respond(body, headers=etag_headers(reservation))


async def _update(request: web.Request, *, via_worker: bool) -> web.StreamResponse:
    workspace = workspace_of(request)
    reservation = _reservation(request, workspace, via_worker)
    check_if_match(request, reservation)
    params = await form(request)
    raw = await request.post()
    status = params.choice("ReservationStatus", STATUSES)
    instruction = params.choice("Instruction", INSTRUCTIONS)
    activity_sid = params.text("WorkerActivitySid")
    if activity_sid is not None and activity_sid not in workspace.activities:
        raise bad_parameter(f"Invalid WorkerActivitySid: activity {activity_sid} not found")
    engine = state_of(request).engine
    task = workspace.tasks[reservation.task_sid]
    try:
        if instruction is not None:
            extra = {
                k: v for k, v in raw.items() if isinstance(v, str) and k not in _CONTROL_FIELDS
            }
            engine.instruct(workspace, reservation, instruction, extra, activity_sid=activity_sid)
        elif status == "accepted":
            engine.accept_reservation(workspace, reservation)
        elif status == "rejected":
            engine.reject_reservation(workspace, reservation, activity_sid=activity_sid)
        elif status == "wrapping":
            engine.require(reservation, "accepted")
            engine.wrap_up_task(workspace, task)
        elif status == "completed":
            engine.require(reservation, "accepted", "wrapping")
            engine.complete_task(workspace, task)
        elif status is not None and status != reservation.status:
            raise bad_parameter(
                f"Invalid ReservationStatus: a reservation cannot be moved to {status}"
            )
    except TransitionError as error:
        raise bad_parameter(str(error)) from None
    body = renderer(request).reservation(workspace, reservation, via_worker=via_worker)
    return respond(body, headers=etag_headers(reservation))


async def list_task_reservations(request: web.Request) -> web.StreamResponse:
    """GET .../Tasks/{sid}/Reservations, by ReservationStatus and WorkerSid."""
    return await _list(request, via_worker=False)


async def fetch_task_reservation(request: web.Request) -> web.StreamResponse:
    """GET .../Tasks/{sid}/Reservations/{sid}, with its ETag."""
    return await _fetch(request, via_worker=False)


async def update_task_reservation(request: web.Request) -> web.StreamResponse:
    """POST .../Tasks/{sid}/Reservations/{sid}: status or instruction; honours If-Match."""
    return await _update(request, via_worker=False)


async def list_worker_reservations(request: web.Request) -> web.StreamResponse:
    """GET .../Workers/{sid}/Reservations, by ReservationStatus."""
    return await _list(request, via_worker=True)


async def fetch_worker_reservation(request: web.Request) -> web.StreamResponse:
    """GET .../Workers/{sid}/Reservations/{sid}, with its ETag."""
    return await _fetch(request, via_worker=True)


async def update_worker_reservation(request: web.Request) -> web.StreamResponse:
    """POST .../Workers/{sid}/Reservations/{sid}: status or instruction; honours If-Match."""
    return await _update(request, via_worker=True)
