"""The simulator's aiohttp application: TaskRouter v1 routes, auth, errors, fault control."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from escalator.simulator import (
    api_events,
    api_reservations,
    api_routing,
    api_statistics,
    api_tasks,
    api_workspaces,
)
from escalator.simulator.api_control import add_control_routes
from escalator.simulator.clock import Clock, RealClock
from escalator.simulator.context import STATE_KEY, state_of
from escalator.simulator.errors import TwilioApiError, error_response, not_found
from escalator.simulator.faults import NO_FAULT, fault_from_json, lose_answer
from escalator.simulator.limits import limits_from_json
from escalator.simulator.state import SimulatorState

__all__ = ["CONTROL_PREFIX", "create_simulator_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONTROL_PREFIX = "/_sim"
_WS = "/v1/Workspaces/{workspace_sid}"

# (collection path, instance path, operation prefix, list, create, fetch, update, delete)
_RESOURCES: tuple[tuple[str, str, str, tuple[Handler, ...]], ...] = (
    (
        "/v1/Workspaces",
        _WS,
        "workspaces",
        (
            api_workspaces.list_workspaces,
            api_workspaces.create_workspace,
            api_workspaces.fetch_workspace,
            api_workspaces.update_workspace,
            api_workspaces.delete_workspace,
        ),
    ),
    (
        f"{_WS}/Activities",
        f"{_WS}/Activities/{{sid}}",
        "activities",
        (
            api_workspaces.list_activities,
            api_workspaces.create_activity,
            api_workspaces.fetch_activity,
            api_workspaces.update_activity,
            api_workspaces.delete_activity,
        ),
    ),
    (
        f"{_WS}/TaskChannels",
        f"{_WS}/TaskChannels/{{sid}}",
        "task_channels",
        (
            api_workspaces.list_task_channels,
            api_workspaces.create_task_channel,
            api_workspaces.fetch_task_channel,
            api_workspaces.update_task_channel,
            api_workspaces.delete_task_channel,
        ),
    ),
    (
        f"{_WS}/TaskQueues",
        f"{_WS}/TaskQueues/{{sid}}",
        "task_queues",
        (
            api_routing.list_task_queues,
            api_routing.create_task_queue,
            api_routing.fetch_task_queue,
            api_routing.update_task_queue,
            api_routing.delete_task_queue,
        ),
    ),
    (
        f"{_WS}/Workflows",
        f"{_WS}/Workflows/{{sid}}",
        "workflows",
        (
            api_routing.list_workflows,
            api_routing.create_workflow,
            api_routing.fetch_workflow,
            api_routing.update_workflow,
            api_routing.delete_workflow,
        ),
    ),
    (
        f"{_WS}/Workers",
        f"{_WS}/Workers/{{sid}}",
        "workers",
        (
            api_routing.list_workers,
            api_routing.create_worker,
            api_routing.fetch_worker,
            api_routing.update_worker,
            api_routing.delete_worker,
        ),
    ),
    (
        f"{_WS}/Tasks",
        f"{_WS}/Tasks/{{sid}}",
        "tasks",
        (
            api_tasks.list_tasks,
            api_tasks.create_task,
            api_tasks.fetch_task,
            api_tasks.update_task,
            api_tasks.delete_task,
        ),
    ),
)

# Sub-resources with fewer operations: (method, path, operation, handler).
_TASK_RESERVATIONS = f"{_WS}/Tasks/{{task_sid}}/Reservations"
_WORKER_RESERVATIONS = f"{_WS}/Workers/{{worker_sid}}/Reservations"
_ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("GET", _TASK_RESERVATIONS, "task_reservations.list", api_reservations.list_task_reservations),
    (
        "GET",
        f"{_TASK_RESERVATIONS}/{{sid}}",
        "task_reservations.fetch",
        api_reservations.fetch_task_reservation,
    ),
    (
        "POST",
        f"{_TASK_RESERVATIONS}/{{sid}}",
        "task_reservations.update",
        api_reservations.update_task_reservation,
    ),
    (
        "GET",
        _WORKER_RESERVATIONS,
        "worker_reservations.list",
        api_reservations.list_worker_reservations,
    ),
    (
        "GET",
        f"{_WORKER_RESERVATIONS}/{{sid}}",
        "worker_reservations.fetch",
        api_reservations.fetch_worker_reservation,
    ),
    (
        "POST",
        f"{_WORKER_RESERVATIONS}/{{sid}}",
        "worker_reservations.update",
        api_reservations.update_worker_reservation,
    ),
    ("GET", f"{_WS}/Events", "events.list", api_events.list_events),
    ("GET", f"{_WS}/Events/{{sid}}", "events.fetch", api_events.fetch_event),
)


def _with_faults(operation: str, handler: Handler) -> Handler:
    may_evaluate = operation == "tasks.list"

    async def faulty(request: web.Request) -> web.StreamResponse:
        state = state_of(request)
        # Twilio rate-limits before anything else: a 429 creates nothing.
        state.limits.check(
            request.match_info.get("workspace_sid", ""),
            evaluates=may_evaluate and "EvaluateTaskAttributes" in request.query,
        )
        plan = state.faults.plan(operation)
        if plan is NO_FAULT:
            return await handler(request)
        if plan.latency:
            await asyncio.sleep(plan.latency)
        if plan.error is not None:
            # The fault answers instead of the handler: the resource is never created.
            raise plan.error
        response = await handler(request)
        if plan.ambiguous is not None:
            # The handler ran (a task is created) but the client never gets the answer.
            await lose_answer(request, plan)
        return response

    return faulty


def _authorized(request: web.Request, state: SimulatorState) -> bool:
    # Decoded by hand: aiohttp 3.14 deprecates BasicAuth, and tests turn warnings into errors.
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    login, separator, password = decoded.partition(":")
    expected = f"{state.account_sid}:{state.auth_token}".encode()
    return bool(separator) and hmac.compare_digest(f"{login}:{password}".encode(), expected)


@web.middleware
async def _twilio_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error on the Twilio API with Twilio's JSON error body."""
    if request.path.startswith(f"{CONTROL_PREFIX}/"):
        return await handler(request)
    try:
        if not _authorized(request, state_of(request)):
            raise TwilioApiError(
                401,
                20003,
                "Authenticate",
                headers={"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
        return await handler(request)
    except TwilioApiError as error:
        return error_response(error)
    except web.HTTPNotFound:
        return error_response(not_found(request.path))
    except web.HTTPMethodNotAllowed:
        return error_response(
            TwilioApiError(405, 20004, f"Method {request.method} not allowed on {request.path}")
        )


async def _health(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def _list_faults(request: web.Request) -> web.StreamResponse:
    faults = state_of(request).faults.active
    return web.json_response({"faults": [f.to_json() for f in faults]})


async def _add_fault(request: web.Request) -> web.StreamResponse:
    try:
        fault = fault_from_json(await request.json())
    except ValueError as error:
        return web.json_response({"error": str(error)}, status=400)
    state_of(request).faults.add(fault)
    return web.json_response(fault.to_json(), status=201)


async def _clear_faults(request: web.Request) -> web.StreamResponse:
    state_of(request).faults.clear()
    return web.Response(status=204)


async def _get_limits(request: web.Request) -> web.StreamResponse:
    return web.json_response(state_of(request).limits.to_json())


async def _set_limits(request: web.Request) -> web.StreamResponse:
    try:
        changes = limits_from_json(await request.json())
    except ValueError as error:
        return web.json_response({"error": str(error)}, status=400)
    limits = state_of(request).limits
    limits.configure(**changes)
    return web.json_response(limits.to_json())


def create_simulator_app(
    *, account_sid: str, auth_token: str, clock: Clock | None = None, seed: int = 0
) -> tuple[web.Application, SimulatorState]:
    """A TaskRouter v1 simulator app and the in-memory state it serves."""
    state = SimulatorState(
        account_sid=account_sid, auth_token=auth_token, clock=clock or RealClock(), seed=seed
    )
    app = web.Application(middlewares=[_twilio_errors])
    app[STATE_KEY] = state
    # First: `TaskQueues/{sid}` would otherwise answer `TaskQueues/Statistics`.
    for method, path, operation, handler in api_statistics.ROUTES:
        app.router.add_route(method, path, _with_faults(operation, handler))
    for collection, instance, name, handlers in _RESOURCES:
        list_, create, fetch, update, delete = handlers
        app.router.add_get(collection, _with_faults(f"{name}.list", list_), allow_head=False)
        app.router.add_post(collection, _with_faults(f"{name}.create", create))
        app.router.add_get(instance, _with_faults(f"{name}.fetch", fetch), allow_head=False)
        app.router.add_post(instance, _with_faults(f"{name}.update", update))
        app.router.add_delete(instance, _with_faults(f"{name}.delete", delete))
    app.router.add_get(f"{CONTROL_PREFIX}/health", _health)
    app.router.add_get(f"{CONTROL_PREFIX}/faults", _list_faults)
    app.router.add_post(f"{CONTROL_PREFIX}/faults", _add_fault)
    app.router.add_delete(f"{CONTROL_PREFIX}/faults", _clear_faults)
    app.router.add_get(f"{CONTROL_PREFIX}/limits", _get_limits)
    app.router.add_post(f"{CONTROL_PREFIX}/limits", _set_limits)
    for method, path, operation, handler in _ROUTES:
        app.router.add_route(method, path, _with_faults(operation, handler))
    app.router.add_post(f"{CONTROL_PREFIX}/clock/advance", api_events.advance_clock)
    app.router.add_post(f"{CONTROL_PREFIX}/callbacks/faults", api_events.set_callback_faults)
    app.router.add_get(f"{CONTROL_PREFIX}/callbacks/deliveries", api_events.callback_deliveries)
    add_control_routes(app, CONTROL_PREFIX)
    app.cleanup_ctx.append(api_events.close_callbacks)
    return app, state
