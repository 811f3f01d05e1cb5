"""Control endpoints outside Twilio's API: worker policies and simulated calls."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from escalator.simulator.agents import policy_from_json
from escalator.simulator.context import state_of
from escalator.simulator.voice import EnqueueError

__all__ = ["add_control_routes"]


def _problem(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "expected a JSON body"}), content_type="application/json"
        ) from None


async def _get_default_policy(request: web.Request) -> web.StreamResponse:
    policy = state_of(request).agents.default
    return web.json_response({"default": policy.to_json() if policy else None})


async def _set_default_policy(request: web.Request) -> web.StreamResponse:
    """Body: a policy, or null to make workers without their own policy do nothing."""
    body = await _body(request)
    try:
        policy = None if body is None else policy_from_json(body)
    except ValueError as error:
        return _problem(str(error))
    state_of(request).agents.default = policy
    return web.json_response({"default": policy.to_json() if policy else None})


async def _set_worker_policy(request: web.Request) -> web.StreamResponse:
    """Body: a policy for this worker, or null to make it follow the default again."""
    body = await _body(request)
    worker_sid = request.match_info["worker_sid"]
    state = state_of(request)
    if not any(worker_sid in ws.workers for ws in state.workspaces.values()):
        return _problem(f"worker {worker_sid} not found", 404)
    try:
        policy = None if body is None else policy_from_json(body)
    except ValueError as error:
        return _problem(str(error))
    state.agents.set_policy(worker_sid, policy)
    return web.json_response({"worker_sid": worker_sid, "policy": body})


async def _enqueue_call(request: web.Request) -> web.StreamResponse:
    """Body: ``{"twiml": "<Response><Enqueue …>", "from", "to", "call_sid", "hangup_after"}``."""
    body = await _body(request)
    if not isinstance(body, dict) or not isinstance(body.get("twiml"), str):
        return _problem("expected a JSON object with the TwiML as 'twiml'")
    hangup_after = body.get("hangup_after")
    if hangup_after is not None and not isinstance(hangup_after, int | float):
        return _problem("hangup_after must be a number of seconds")
    options = {
        name: str(body[key])
        for key, name in (("from", "from_number"), ("to", "to_number"), ("call_sid", "call_sid"))
        if body.get(key) is not None
    }
    try:
        call = state_of(request).calls.enqueue(
            body["twiml"],
            hangup_after=float(hangup_after) if hangup_after is not None else None,
            **options,
        )
    except EnqueueError as error:
        return _problem(str(error))
    return web.json_response(call.to_json(), status=201)


async def _get_call(request: web.Request) -> web.StreamResponse:
    call = state_of(request).calls.calls.get(request.match_info["call_sid"])
    if call is None:
        return _problem("call not found", 404)
    return web.json_response(call.to_json())


async def _hang_up(request: web.Request) -> web.StreamResponse:
    calls = state_of(request).calls
    if request.match_info["call_sid"] not in calls.calls:
        return _problem("call not found", 404)
    return web.json_response(calls.hang_up(request.match_info["call_sid"]).to_json())


def add_control_routes(app: web.Application, prefix: str) -> None:
    """Register the worker-policy and call endpoints under the control prefix."""
    app.router.add_get(f"{prefix}/workers/policy", _get_default_policy)
    app.router.add_post(f"{prefix}/workers/policy", _set_default_policy)
    app.router.add_post(f"{prefix}/workers/{{worker_sid}}/policy", _set_worker_policy)
    app.router.add_post(f"{prefix}/calls", _enqueue_call)
    app.router.add_get(f"{prefix}/calls/{{call_sid}}", _get_call)
    app.router.add_post(f"{prefix}/calls/{{call_sid}}/hangup", _hang_up)
