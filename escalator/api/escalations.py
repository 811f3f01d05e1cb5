"""Handlers of ``/escalations``: thin, they parse, call the store and serialise."""

from __future__ import annotations

from aiohttp import web

from escalator.api.auth import require_api_key
from escalator.api.keys import CLOCK, DISPATCHER, METRICS, NEW_ID, ROUTING, SETTINGS, STORE
from escalator.api.problems import Problem
from escalator.api.resources import escalation_resource
from escalator.dispatcher.callback_urls import CallbackUrlRefused, UrlPolicy, check_callback_url
from escalator.domain.escalation import new_escalation
from escalator.domain.ids import EscalationId
from escalator.domain.request import EscalationRequest
from escalator.errors import EscalationNotFound
from escalator.logs import get_logger

__all__ = ["routes"]

routes = web.RouteTableDef()
_log = get_logger(__name__)


def _authenticate(request: web.Request) -> None:
    require_api_key(request, request.app[SETTINGS].api_keys)


async def _json_body(request: web.Request) -> bytes:
    if request.content_type != "application/json":
        raise Problem(
            415,
            "send the escalation as 'Content-Type: application/json'",
            headers={"Accept-Post": "application/json"},
        )
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Problem(413, f"the request body is over {limit} bytes")
    return await request.read()


async def _check_status_callback_url(request: web.Request, url: str) -> None:
    settings = request.app[SETTINGS]
    if settings.callback_secret is None:
        message = "status callbacks are off here (ESCALATOR_CALLBACK_SECRET is not set)"
    else:
        policy = UrlPolicy(settings.callback_allow_http, settings.callback_allow_private)
        try:
            await check_callback_url(url, policy)
            return
        except CallbackUrlRefused as exc:
            message = str(exc)
    raise Problem(
        422,
        f"1 invalid field(s): status_callback_url: {message}",
        errors=[{"field": "status_callback_url", "message": message}],
    )


@routes.post("/escalations")
async def create_escalation(request: web.Request) -> web.Response:
    """Acknowledge an escalation once it and its outbox row are committed."""
    _authenticate(request)
    body = EscalationRequest.model_validate_json(await _json_body(request))
    if body.status_callback_url is not None:
        await _check_status_callback_url(request, body.status_callback_url)
    route = request.app[ROUTING].route(body.reason_code)
    candidate = new_escalation(
        body, route, escalation_id=request.app[NEW_ID](), now=request.app[CLOCK]()
    )
    escalation, created = await request.app[STORE].create_escalation(candidate)
    location = f"/escalations/{escalation.id}"
    request.app[METRICS].escalations_received.labels(
        result="created" if created else "existing"
    ).inc()
    if created:
        _log.info(
            "escalation.created",
            escalation_id=escalation.id,
            reason_code=escalation.reason_code,
            known_reason=escalation.known_reason,
            department=escalation.department,
            channel=escalation.channel.value,
        )
        dispatcher = request.app.get(DISPATCHER)
        if dispatcher is not None:
            dispatcher.wake()
        return web.json_response(
            escalation_resource(escalation), status=201, headers={"Location": location}
        )
    _log.info("escalation.existing", escalation_id=escalation.id)
    return web.json_response(
        escalation_resource(escalation), status=200, headers={"Content-Location": location}
    )


@routes.get("/escalations/{escalation_id}")
async def get_escalation(request: web.Request) -> web.Response:
    """The escalation with its history."""
    _authenticate(request)
    escalation_id = EscalationId(request.match_info["escalation_id"])
    escalation = await request.app[STORE].get_escalation(escalation_id)
    if escalation is None:
        raise EscalationNotFound(f"no escalation has the id {escalation_id!r}")
    return web.json_response(escalation_resource(escalation))
