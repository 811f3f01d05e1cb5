"""``GET /escalations`` (filters and keyset paging) and ``POST /escalations/{id}/cancel``."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from aiohttp import web

from escalator.api.auth import require_api_key
from escalator.api.keys import CLOCK, DISPATCHER, METRICS, SETTINGS, STORE
from escalator.api.problems import Problem
from escalator.api.resources import escalation_resource
from escalator.api.transitions import record_transition
from escalator.domain.changes import cancel_for_client
from escalator.domain.escalation import Escalation, Status
from escalator.domain.ids import EscalationId
from escalator.errors import EscalationNotFound
from escalator.logs import get_logger

__all__ = ["decode_cursor", "encode_cursor", "routes"]

routes = web.RouteTableDef()
_log = get_logger(__name__)
DEFAULT_LIMIT, MAX_LIMIT = 50, 200


def _invalid(field: str, message: str) -> Problem:
    return Problem(
        422,
        f"1 invalid field(s): {field}: {message}",
        errors=[{"field": field, "message": message}],
    )


def encode_cursor(escalation: Escalation) -> str:
    """An opaque cursor: the page continues after this escalation."""
    raw = json.dumps([escalation.created_at.isoformat(), escalation.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, EscalationId]:
    """The position a cursor stands for; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, escalation_id = json.loads(raw)
        moment = datetime.fromisoformat(created_at)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError("not a cursor this service issued") from exc
    if moment.tzinfo is None or not isinstance(escalation_id, str):
        raise ValueError("not a cursor this service issued")
    return moment, EscalationId(escalation_id)


def _statuses(request: web.Request) -> list[Status]:
    wanted: list[Status] = []
    for value in request.query.getall("status", []):
        for part in value.split(","):
            try:
                wanted.append(Status(part.strip()))
            except ValueError:
                choices = ", ".join(status.value for status in Status)
                raise _invalid("status", f"must be one of {choices}") from None
    return wanted


def _limit(request: web.Request) -> int:
    text = request.query.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise _invalid("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(text)


@routes.get("/escalations")
async def list_escalations(request: web.Request) -> web.Response:
    """A page of escalations, oldest first, and the cursor of the next page."""
    require_api_key(request, request.app[SETTINGS].api_keys)
    statuses, limit = _statuses(request), _limit(request)
    after = None
    if (cursor := request.query.get("cursor")) is not None:
        try:
            after = decode_cursor(cursor)
        except ValueError as exc:
            raise _invalid("cursor", str(exc)) from None
    conversation_id = request.query.get("conversation_id")
    page = await request.app[STORE].list_escalations(
        conversation_id=conversation_id, statuses=statuses, after=after, limit=limit + 1
    )
    more = len(page) > limit
    page = page[:limit]
    return web.json_response(
        {
            "items": [escalation_resource(escalation) for escalation in page],
            "next_cursor": encode_cursor(page[-1]) if more else None,
        }
    )


@routes.post("/escalations/{escalation_id}/cancel")
async def cancel_escalation(request: web.Request) -> web.Response:
    """Cancel for the client: ``canceled`` at once when no task exists or can; otherwise the
    cancel waits (``cancel_requested``) for TaskRouter to cancel the task, which it refuses
    once a worker has accepted it."""
    require_api_key(request, request.app[SETTINGS].api_keys)
    escalation_id = EscalationId(request.match_info["escalation_id"])
    now = request.app[CLOCK]()

    def cancel(escalation: Escalation, task_may_exist: bool) -> Escalation:
        return cancel_for_client(escalation, now=now, task_may_exist=task_may_exist)

    result = await request.app[STORE].cancel_escalation(escalation_id, now=now, cancel=cancel)
    if result is None:
        raise EscalationNotFound(f"no escalation has the id {escalation_id!r}")
    before, after = result
    if after is before and not before.cancel_requested:
        if before.status is Status.ASSIGNED:
            raise Problem(
                409,
                "a worker has accepted this escalation; TaskRouter cancels a task only until it "
                "is assigned",
            )
        outcome = before.outcome.value if before.outcome else "none"
        raise Problem(
            409, f"the escalation already ended ({before.status.value}, outcome {outcome})"
        )
    if after is not before:
        record_transition(request.app[METRICS], before, after, now)
        _log.info(
            "escalation.cancel_requested" if after.cancel_requested else "escalation.canceled",
            escalation_id=after.id,
            had_task=bool(before.task_sid),
        )
        dispatcher = request.app.get(DISPATCHER)
        if dispatcher is not None:
            dispatcher.wake()
    return web.json_response(escalation_resource(after))
