"""What every handler needs: the state, the addressed workspace, params and a renderer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from aiohttp import web
from multidict import MultiDict

from escalator.simulator.errors import not_found
from escalator.simulator.params import Params
from escalator.simulator.resources import Renderer
from escalator.simulator.state import SimulatorState, Workspace

__all__ = [
    "STATE_KEY",
    "form",
    "query",
    "renderer",
    "resource",
    "respond",
    "state_of",
    "workspace_of",
]

T = TypeVar("T")
STATE_KEY = web.AppKey("simulator_state", SimulatorState)


def state_of(request: web.Request) -> SimulatorState:
    """The simulator state behind this app."""
    return request.app[STATE_KEY]


def renderer(request: web.Request) -> Renderer:
    """A renderer whose URLs point at the host the client called."""
    state = state_of(request)
    return Renderer.for_request(
        request, state.account_sid, state.now(), hide_attributes=state.hide_attributes_in_lists
    )


def workspace_of(request: web.Request) -> Workspace:
    """The workspace named in the path; a Twilio 404 when unknown."""
    workspace = state_of(request).workspaces.get(request.match_info["workspace_sid"])
    if workspace is None:
        raise not_found(request.path)
    return workspace


def resource(request: web.Request, resources: Mapping[str, T]) -> T:
    """The resource whose SID is the path's last segment; a Twilio 404 when unknown."""
    found = resources.get(request.match_info["sid"])
    if found is None:
        raise not_found(request.path)
    return found


async def form(request: web.Request) -> Params:
    """The form-encoded body's fields."""
    data = await request.post()
    fields: MultiDict[str] = MultiDict((k, v) for k, v in data.items() if isinstance(v, str))
    return Params(fields)


def query(request: web.Request) -> Params:
    """The query string's parameters."""
    return Params(request.query, where="the query string")


def respond(
    body: dict[str, Any], *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response."""
    return web.json_response(body, status=status, headers=headers)
