"""Handlers of ``/escalations``: thin, they parse, call the store and serialise."""

from __future__ import annotations

from aiohttp import web

from escalator.api.auth import require_api_key
from escalator.api.idempotency import (
    HEADER,
    REPLAYED_HEADER,
    answered,
    idempotency_key,
    parse_key,
)
from escalator.api.keys import CLOCK, METRICS, NEW_ID, ROUTING, SETTINGS, STORE
from escalator.api.problems import Problem
from escalator.api.resources import escalation_resource
from escalator.dispatcher.callback_urls import CallbackUrlRefused, UrlPolicy, check_callback_url
from escalator.domain.escalation import Escalation, new_escalation
from escalator.domain.ids import EscalationId
from escalator.domain.request import EscalationRequest
from escalator.errors import EscalationNotFound
from escalator.logs import get_logger
from escalator.store import IdempotencyResult

__all__ = ["routes"]

routes = web.RouteTableDef()
_log = get_logger(__name__)


def _authenticate(request: web.Request) -> str:
    keys = request.app[SETTINGS].api_keys
    return keys[require_api_key(request, keys)].get_secret_value()


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


def _existing(escalation: Escalation, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        escalation_resource(escalation),
        status=200,
        headers={"Content-Location": f"/escalations/{escalation.id}", **(headers or {})},
    )


@routes.post("/escalations")
async def create_escalation(request: web.Request) -> web.Response:
    """Acknowledge an escalation once it and its outbox row are committed."""
    api_key = _authenticate(request)
    key = parse_key(request.headers.getall(HEADER, []))
    body = EscalationRequest.model_validate_json(await _json_body(request))
    if body.status_callback_url is not None:
        await _check_status_callback_url(request, body.status_callback_url)
    route = request.app[ROUTING].route(body.reason_code)
    now = request.app[CLOCK]()
    candidate = new_escalation(body, route, escalation_id=request.app[NEW_ID](), now=now)
    store = request.app[STORE]
    if key is None:
        escalation, created = await store.create_escalation(candidate)
    else:
        ttl = request.app[SETTINGS].idempotency_ttl
        outcome = await store.create_escalation_with_key(
            candidate, idempotency_key(key, api_key=api_key, body=body, now=now, ttl=ttl)
        )
        request.app[METRICS].idempotency.labels(result=outcome.result.value).inc()
        escalation, created = answered(outcome)
        if outcome.result is IdempotencyResult.REPLAYED:
            _log.info("escalation.replayed", escalation_id=escalation.id)
            return _existing(escalation, {REPLAYED_HEADER: "true"})
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
        # The store handed its create row to this process's dispatcher, or woke it.
        return web.json_response(
            escalation_resource(escalation), status=201, headers={"Location": location}
        )
    _log.info("escalation.existing", escalation_id=escalation.id)
    return _existing(escalation)


@routes.get("/escalations/{escalation_id}")
async def get_escalation(request: web.Request) -> web.Response:
    """The escalation with its history."""
    _authenticate(request)
    escalation_id = EscalationId(request.match_info["escalation_id"])
    escalation = await request.app[STORE].get_escalation(escalation_id)
    if escalation is None:
        raise EscalationNotFound(f"no escalation has the id {escalation_id!r}")
    return web.json_response(escalation_resource(escalation))
