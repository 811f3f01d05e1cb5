"""TaskRouter's webhooks: event callbacks (``/taskrouter/events``) and assignment callbacks."""

from __future__ import annotations

from typing import cast

from aiohttp import web
from multidict import MultiDictProxy

from escalator.api.keys import CLOCK, DISPATCHER, METRICS, ROUTING, SETTINGS, STORE
from escalator.api.problems import Problem
from escalator.api.transitions import record_transition
from escalator.domain.effects import KNOWN_EVENTS, WorkerReset, applies, side_effects
from escalator.domain.escalation import Escalation, Status
from escalator.domain.events import TaskRouterEvent, apply_event
from escalator.errors import StoreUnavailable
from escalator.logs import get_logger
from escalator.store import Ingested, IngestResult
from escalator.taskrouter.webhooks import (
    MalformedCallback,
    assignment_channel,
    assignment_instruction,
    parse_event,
    signature_is_valid,
)

__all__ = ["routes"]

routes = web.RouteTableDef()
_log = get_logger(__name__)
_CHANNELS = frozenset({"chat", "sms", "whatsapp", "email", "voice"})


async def _signed_form(request: web.Request, endpoint: str) -> dict[str, str]:
    """The form parameters, once ``X-Twilio-Signature`` proves TaskRouter sent them."""
    settings = request.app[SETTINGS]
    form = await request.post()
    if not all(isinstance(value, str) for value in form.values()):
        raise Problem(400, "a TaskRouter callback carries form fields only, not files")
    # Kept a multidict: the signature covers every value of a repeated field.
    fields = cast("MultiDictProxy[str]", form)
    # Twilio signs the URL it called: behind a TLS-terminating ingress that is the public
    # one, so it is rebuilt from ESCALATOR_PUBLIC_URL, never from the socket.
    url = settings.effective_public_url + request.raw_path
    token = settings.twilio_auth_token
    signature = request.headers.get("X-Twilio-Signature")
    if token is None or not signature_is_valid(token.get_secret_value(), url, fields, signature):
        request.app[METRICS].signature_failures.labels(endpoint=endpoint).inc()
        _log.warning("webhook.bad_signature", endpoint=endpoint, signed=bool(signature))
        raise Problem(403, "the X-Twilio-Signature header does not sign this request")
    return dict(fields)


def _acknowledged() -> web.Response:
    # TaskRouter wants a 2xx within 15 s, and documents 204 with an application/json type.
    return web.Response(status=204, headers={"Content-Type": "application/json"})


@routes.post("/taskrouter/events")
async def taskrouter_event(request: web.Request) -> web.Response:
    """Store a TaskRouter event once and apply it to its escalation; 204 at once."""
    form = await _signed_form(request, "events")
    received_at = request.app[CLOCK]()
    metrics = request.app[METRICS]
    try:
        event = parse_event(form, received_at=received_at)
    except MalformedCallback as exc:
        raise Problem(400, str(exc)) from None
    if event.event_type not in KNOWN_EVENTS:
        metrics.events_received.labels(type="other", result="unknown").inc()
        return _acknowledged()
    cascade = request.app[ROUTING].file.cascade

    def react(escalation: Escalation) -> tuple[Escalation, tuple[WorkerReset, ...]] | None:
        if not applies(escalation, event):
            return None
        after = apply_event(escalation, event)
        return after, side_effects(escalation, after, event, cascade)

    try:
        ingested = await request.app[STORE].ingest_event(
            event, received_at=received_at, react=react
        )
    except StoreUnavailable:
        metrics.store_unavailable.labels(where="events").inc()
        raise
    except Exception:
        # Never a 500: a 503 says "come back", and TaskRouter or the reconciler will.
        metrics.store_unavailable.labels(where="events").inc()
        _log.exception("taskrouter.event_failed", event_type=event.event_type)
        raise Problem(
            503, "the event could not be stored; retry", headers={"Retry-After": "1"}
        ) from None
    metrics.events_received.labels(type=event.event_type, result=ingested.result.value).inc()
    _after_ingest(request, event, ingested)
    return _acknowledged()


def _after_ingest(request: web.Request, event: TaskRouterEvent, ingested: Ingested) -> None:
    before, after = ingested.before, ingested.after
    if ingested.result is not IngestResult.APPLIED or before is None or after is None:
        _log.debug("taskrouter.event_skipped", event_type=event.event_type, result=ingested.result)
        return
    record_transition(request.app[METRICS], before, after, request.app[CLOCK]())
    if ingested.effects:
        dispatcher = request.app.get(DISPATCHER)
        if dispatcher is not None:
            dispatcher.wake()
    # Info for what an operator follows (a human took it, it ended), once, when it happens;
    # debug for the rest: at thousands of events a second, a line each is noise and a
    # measurable cost.
    decisive = after.status is not before.status and (
        after.status is Status.ASSIGNED or after.status.is_terminal
    )
    (_log.info if decisive else _log.debug)(
        "taskrouter.event_applied",
        escalation_id=after.id,
        event_type=event.event_type,
        task_sid=event.task_sid,
        reservation_sid=event.reservation_sid,
        worker_sid=event.worker_sid,
        status=after.status.value,
        outcome=after.outcome.value if after.outcome else None,
    )


@routes.post("/taskrouter/assignment")
async def taskrouter_assignment(request: web.Request) -> web.Response:
    """The instruction for a reservation, from the routing file; never waits on the database."""
    form = await _signed_form(request, "assignment")
    channel = assignment_channel(form)
    instruction = assignment_instruction(request.app[ROUTING].file.assignment.for_channel(channel))
    request.app[METRICS].assignment_instructions.labels(
        channel=channel if channel in _CHANNELS else "other",
        instruction=instruction.instruction,
    ).inc()
    return web.json_response(instruction.body())
