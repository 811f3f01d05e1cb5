"""The statistics endpoints of task queues, workflows and the workspace; all read-only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from escalator.simulator.context import query, renderer, resource, respond, state_of, workspace_of
from escalator.simulator.errors import bad_parameter
from escalator.simulator.paging import page_body
from escalator.simulator.params import Params
from escalator.simulator.state import TaskQueue, Workspace
from escalator.simulator.statistics import (
    QUEUE_CUMULATIVE_FIELDS,
    WORKFLOW_CUMULATIVE_FIELDS,
    WORKSPACE_CUMULATIVE_FIELDS,
    Scope,
    Window,
    cumulative,
    queue_realtime,
    workflow_realtime,
    workspace_realtime,
)

__all__ = [
    "ROUTES",
    "fetch_queue_cumulative",
    "fetch_queue_realtime",
    "fetch_queue_statistics",
    "fetch_workflow_cumulative",
    "fetch_workflow_realtime",
    "fetch_workflow_statistics",
    "fetch_workspace_cumulative",
    "fetch_workspace_realtime",
    "fetch_workspace_statistics",
    "list_queue_statistics",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Cumulative statistics: `Minutes` defaults to 15 (OpenAPI); events are kept 30 days.
DEFAULT_MINUTES = 15
MAX_MINUTES = 43_200


# --- query parameters ---------------------------------------------------------------------


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


def _window(request: web.Request, params: Params) -> Window:
    now = state_of(request).clock.now()
    start = _date(params, "StartDate")
    end = _date(params, "EndDate") or now
    if start is None:
        minutes = params.integer("Minutes", minimum=1, maximum=MAX_MINUTES) or DEFAULT_MINUTES
        start = end - timedelta(minutes=minutes)
    if start > end:
        raise bad_parameter("Invalid StartDate: must be before EndDate")
    return Window(start, end)


def _splits(params: Params) -> list[int]:
    raw = params.values("SplitByWaitTime") or []
    if not all(value.isdigit() for value in raw):
        raise bad_parameter(f"Invalid SplitByWaitTime: '{','.join(raw)}' must be seconds")
    return sorted({int(value) for value in raw})


def _channel(workspace: Workspace, params: Params) -> str | None:
    name = params.text("TaskChannel")
    if name is None:
        return None
    channel = workspace.channel(name)
    if channel is None:
        raise bad_parameter(f"Invalid TaskChannel: '{name}' is not a task channel")
    return channel.sid


def _cumulative(request: web.Request, scope: Scope, fields: tuple[str, ...]) -> dict[str, Any]:
    params = query(request)
    return cumulative(
        state_of(request).events, scope, _window(request, params), fields, _splits(params)
    )


def _url(request: web.Request, workspace: Workspace, path: str) -> str:
    return f"{renderer(request).base}/Workspaces/{workspace.sid}{path}"


def _ids(request: web.Request, workspace: Workspace) -> dict[str, str]:
    return {"account_sid": state_of(request).account_sid, "workspace_sid": workspace.sid}


# --- task queues --------------------------------------------------------------------------


def _queue_realtime(request: web.Request, workspace: Workspace, queue: TaskQueue) -> dict[str, Any]:
    channel = _channel(workspace, query(request))
    return queue_realtime(workspace, queue, state_of(request).now(), channel)


def _queue_cumulative(
    request: web.Request, workspace: Workspace, queue: TaskQueue
) -> dict[str, Any]:
    channel = _channel(workspace, query(request))
    scope = Scope(workspace.sid, task_queue_sid=queue.sid, channel_sid=channel)
    return _cumulative(request, scope, QUEUE_CUMULATIVE_FIELDS)


def _queue_body(
    request: web.Request, workspace: Workspace, queue: TaskQueue, name: str, stats: dict[str, Any]
) -> dict[str, Any]:
    url = _url(request, workspace, f"/TaskQueues/{queue.sid}/{name}")
    return {**_ids(request, workspace), "task_queue_sid": queue.sid, **stats, "url": url}


async def fetch_queue_realtime(request: web.Request) -> web.StreamResponse:
    """GET .../TaskQueues/{sid}/RealTimeStatistics."""
    workspace = workspace_of(request)
    queue = resource(request, workspace.task_queues)
    stats = _queue_realtime(request, workspace, queue)
    return respond(_queue_body(request, workspace, queue, "RealTimeStatistics", stats))


async def fetch_queue_cumulative(request: web.Request) -> web.StreamResponse:
    """GET .../TaskQueues/{sid}/CumulativeStatistics over `Minutes` or StartDate/EndDate."""
    workspace = workspace_of(request)
    queue = resource(request, workspace.task_queues)
    stats = _queue_cumulative(request, workspace, queue)
    return respond(_queue_body(request, workspace, queue, "CumulativeStatistics", stats))


def _queue_both(request: web.Request, workspace: Workspace, queue: TaskQueue) -> dict[str, Any]:
    return {
        "cumulative": _queue_cumulative(request, workspace, queue),
        "realtime": _queue_realtime(request, workspace, queue),
    }


async def fetch_queue_statistics(request: web.Request) -> web.StreamResponse:
    """GET .../TaskQueues/{sid}/Statistics: the cumulative and real-time statistics together."""
    workspace = workspace_of(request)
    queue = resource(request, workspace.task_queues)
    stats = _queue_both(request, workspace, queue)
    return respond(_queue_body(request, workspace, queue, "Statistics", stats))


async def list_queue_statistics(request: web.Request) -> web.StreamResponse:
    """GET .../TaskQueues/Statistics: every queue's statistics, filtered by FriendlyName."""
    workspace = workspace_of(request)
    name = query(request).text("FriendlyName")
    queues = [q for q in workspace.task_queues.values() if name is None or q.friendly_name == name]

    def render(queue: TaskQueue) -> dict[str, Any]:
        # The list items carry no `url` (OpenAPI task_queues_statistics).
        stats = _queue_both(request, workspace, queue)
        return {**_ids(request, workspace), "task_queue_sid": queue.sid, **stats}

    return respond(page_body(request, "task_queues_statistics", queues, render))


# --- workflows ----------------------------------------------------------------------------


def _workflow_stats(request: web.Request, name: str) -> dict[str, Any]:
    workspace = workspace_of(request)
    workflow = resource(request, workspace.workflows)
    channel = _channel(workspace, query(request))
    now = state_of(request).now()
    scope = Scope(workspace.sid, workflow_sid=workflow.sid, channel_sid=channel)
    parts: dict[str, dict[str, Any]] = {}
    if name != "CumulativeStatistics":
        parts["realtime"] = workflow_realtime(workspace, workflow, now, channel)
    if name != "RealTimeStatistics":
        parts["cumulative"] = _cumulative(request, scope, WORKFLOW_CUMULATIVE_FIELDS)
    stats = parts if name == "Statistics" else next(iter(parts.values()))
    url = _url(request, workspace, f"/Workflows/{workflow.sid}/{name}")
    return {**_ids(request, workspace), "workflow_sid": workflow.sid, **stats, "url": url}


async def fetch_workflow_realtime(request: web.Request) -> web.StreamResponse:
    """GET .../Workflows/{sid}/RealTimeStatistics."""
    return respond(_workflow_stats(request, "RealTimeStatistics"))


async def fetch_workflow_cumulative(request: web.Request) -> web.StreamResponse:
    """GET .../Workflows/{sid}/CumulativeStatistics, incl. tasks timed out of the workflow."""
    return respond(_workflow_stats(request, "CumulativeStatistics"))


async def fetch_workflow_statistics(request: web.Request) -> web.StreamResponse:
    """GET .../Workflows/{sid}/Statistics: the cumulative and real-time statistics together."""
    return respond(_workflow_stats(request, "Statistics"))


# --- the workspace ------------------------------------------------------------------------


def _workspace_stats(request: web.Request, name: str) -> dict[str, Any]:
    workspace = workspace_of(request)
    channel = _channel(workspace, query(request))
    parts: dict[str, dict[str, Any]] = {}
    if name != "CumulativeStatistics":
        parts["realtime"] = workspace_realtime(workspace, state_of(request).now(), channel)
    if name != "RealTimeStatistics":
        scope = Scope(workspace.sid, channel_sid=channel)
        parts["cumulative"] = _cumulative(request, scope, WORKSPACE_CUMULATIVE_FIELDS)
    stats = parts if name == "Statistics" else next(iter(parts.values()))
    return {**_ids(request, workspace), **stats, "url": _url(request, workspace, f"/{name}")}


async def fetch_workspace_realtime(request: web.Request) -> web.StreamResponse:
    """GET .../RealTimeStatistics of the workspace."""
    return respond(_workspace_stats(request, "RealTimeStatistics"))


async def fetch_workspace_cumulative(request: web.Request) -> web.StreamResponse:
    """GET .../CumulativeStatistics of the workspace."""
    return respond(_workspace_stats(request, "CumulativeStatistics"))


async def fetch_workspace_statistics(request: web.Request) -> web.StreamResponse:
    """GET .../Statistics of the workspace: the cumulative and real-time statistics together."""
    return respond(_workspace_stats(request, "Statistics"))


_WS = "/v1/Workspaces/{workspace_sid}"
_QUEUE = f"{_WS}/TaskQueues/{{sid}}"
_FLOW = f"{_WS}/Workflows/{{sid}}"
# (method, path, fault operation, handler). `TaskQueues/Statistics` must be registered
# before `TaskQueues/{sid}`, which would otherwise take "Statistics" for a SID.
ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("GET", f"{_WS}/TaskQueues/Statistics", "task_queues_statistics.list", list_queue_statistics),
    ("GET", f"{_QUEUE}/RealTimeStatistics", "task_queue_real_time.fetch", fetch_queue_realtime),
    (
        "GET",
        f"{_QUEUE}/CumulativeStatistics",
        "task_queue_cumulative.fetch",
        fetch_queue_cumulative,
    ),
    ("GET", f"{_QUEUE}/Statistics", "task_queue_statistics.fetch", fetch_queue_statistics),
    ("GET", f"{_FLOW}/RealTimeStatistics", "workflow_real_time.fetch", fetch_workflow_realtime),
    (
        "GET",
        f"{_FLOW}/CumulativeStatistics",
        "workflow_cumulative.fetch",
        fetch_workflow_cumulative,
    ),
    ("GET", f"{_FLOW}/Statistics", "workflow_statistics.fetch", fetch_workflow_statistics),
    ("GET", f"{_WS}/RealTimeStatistics", "workspace_real_time.fetch", fetch_workspace_realtime),
    (
        "GET",
        f"{_WS}/CumulativeStatistics",
        "workspace_cumulative.fetch",
        fetch_workspace_cumulative,
    ),
    ("GET", f"{_WS}/Statistics", "workspace_statistics.fetch", fetch_workspace_statistics),
)
