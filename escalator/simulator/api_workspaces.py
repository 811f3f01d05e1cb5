"""Handlers for Workspaces, Activities and TaskChannels."""

from __future__ import annotations

from aiohttp import web

from escalator.simulator.context import (
    form,
    query,
    renderer,
    resource,
    respond,
    state_of,
    workspace_of,
)
from escalator.simulator.errors import bad_parameter, not_found
from escalator.simulator.paging import page_body
from escalator.simulator.state import Activity, TaskChannel, new_sid

__all__ = [
    "create_activity",
    "create_task_channel",
    "create_workspace",
    "delete_activity",
    "delete_task_channel",
    "delete_workspace",
    "fetch_activity",
    "fetch_task_channel",
    "fetch_workspace",
    "list_activities",
    "list_task_channels",
    "list_workspaces",
    "update_activity",
    "update_task_channel",
    "update_workspace",
]

_QUEUE_ORDERS = ("FIFO", "LIFO")


async def create_workspace(request: web.Request) -> web.StreamResponse:
    """POST /v1/Workspaces."""
    params = await form(request)
    state = state_of(request)
    workspace = state.add_workspace(
        friendly_name=params.required("FriendlyName"),
        event_callback_url=params.text("EventCallbackUrl"),
        events_filter=params.text("EventsFilter"),
        multi_task_enabled=params.boolean("MultiTaskEnabled") is not False,
        prioritize_queue_order=params.choice("PrioritizeQueueOrder", _QUEUE_ORDERS) or "FIFO",
    )
    return respond(renderer(request).workspace(workspace), status=201)


async def fetch_workspace(request: web.Request) -> web.StreamResponse:
    """GET /v1/Workspaces/{sid}."""
    return respond(renderer(request).workspace(workspace_of(request)))


async def list_workspaces(request: web.Request) -> web.StreamResponse:
    """GET /v1/Workspaces."""
    name = query(request).text("FriendlyName")
    items = [
        w for w in state_of(request).workspaces.values() if name is None or w.friendly_name == name
    ]
    return respond(page_body(request, "workspaces", items, renderer(request).workspace))


async def update_workspace(request: web.Request) -> web.StreamResponse:
    """POST /v1/Workspaces/{sid}."""
    workspace = workspace_of(request)
    params = await form(request)
    for field, activity_sid in (
        ("DefaultActivitySid", params.text("DefaultActivitySid")),
        ("TimeoutActivitySid", params.text("TimeoutActivitySid")),
    ):
        if activity_sid is not None and activity_sid not in workspace.activities:
            raise bad_parameter(f"Invalid {field}: activity {activity_sid} not found")
    multi_task = params.boolean("MultiTaskEnabled")
    if multi_task is False and workspace.multi_task_enabled:
        # Twilio: multi-tasking cannot be turned off once it is on.
        raise bad_parameter("Invalid MultiTaskEnabled: multi-tasking cannot be disabled")
    workspace.default_activity_sid = (
        params.text("DefaultActivitySid") or workspace.default_activity_sid
    )
    workspace.timeout_activity_sid = (
        params.text("TimeoutActivitySid") or workspace.timeout_activity_sid
    )
    workspace.friendly_name = params.text("FriendlyName") or workspace.friendly_name
    if "EventCallbackUrl" in params:
        workspace.event_callback_url = params.text("EventCallbackUrl") or None
    if "EventsFilter" in params:
        workspace.events_filter = params.text("EventsFilter") or None
    if multi_task is not None:
        workspace.multi_task_enabled = multi_task
    workspace.prioritize_queue_order = (
        params.choice("PrioritizeQueueOrder", _QUEUE_ORDERS) or workspace.prioritize_queue_order
    )
    workspace.date_updated = state_of(request).now()
    return respond(renderer(request).workspace(workspace))


async def delete_workspace(request: web.Request) -> web.StreamResponse:
    """DELETE /v1/Workspaces/{sid}."""
    workspace = workspace_of(request)
    del state_of(request).workspaces[workspace.sid]
    return web.Response(status=204)


async def create_activity(request: web.Request) -> web.StreamResponse:
    """POST .../Activities."""
    workspace = workspace_of(request)
    params = await form(request)
    name = params.required("FriendlyName")
    if any(a.friendly_name == name for a in workspace.activities.values()):
        raise bad_parameter(f"Invalid FriendlyName: an activity named '{name}' already exists")
    now = state_of(request).now()
    available = params.boolean("Available")
    activity = Activity(new_sid("WA"), workspace.sid, name, available is not False, now, now)
    workspace.activities[activity.sid] = activity
    return respond(renderer(request).activity(activity), status=201)


async def fetch_activity(request: web.Request) -> web.StreamResponse:
    """GET .../Activities/{sid}."""
    return respond(renderer(request).activity(resource(request, workspace_of(request).activities)))


async def list_activities(request: web.Request) -> web.StreamResponse:
    """GET .../Activities."""
    params = query(request)
    name = params.text("FriendlyName")
    available = params.boolean("Available")
    items = [
        a
        for a in workspace_of(request).activities.values()
        if (name is None or a.friendly_name == name)
        and (available is None or a.available == available)
    ]
    return respond(page_body(request, "activities", items, renderer(request).activity))


async def update_activity(request: web.Request) -> web.StreamResponse:
    """POST .../Activities/{sid}: only the name changes, as in TaskRouter."""
    activity = resource(request, workspace_of(request).activities)
    params = await form(request)
    activity.friendly_name = params.text("FriendlyName") or activity.friendly_name
    activity.date_updated = state_of(request).now()
    return respond(renderer(request).activity(activity))


async def delete_activity(request: web.Request) -> web.StreamResponse:
    """DELETE .../Activities/{sid}; refused while a worker or the workspace uses it."""
    workspace = workspace_of(request)
    activity = resource(request, workspace.activities)
    in_use = activity.sid in (workspace.default_activity_sid, workspace.timeout_activity_sid)
    if in_use or any(w.activity_sid == activity.sid for w in workspace.workers.values()):
        raise bad_parameter(f"Activity {activity.sid} is in use and cannot be deleted")
    del workspace.activities[activity.sid]
    return web.Response(status=204)


async def create_task_channel(request: web.Request) -> web.StreamResponse:
    """POST .../TaskChannels."""
    workspace = workspace_of(request)
    params = await form(request)
    friendly_name = params.required("FriendlyName")
    unique_name = params.required("UniqueName")
    if workspace.channel(unique_name) is not None:
        raise bad_parameter(f"Invalid UniqueName: '{unique_name}' already exists")
    now = state_of(request).now()
    channel = TaskChannel(
        new_sid("TC"),
        workspace.sid,
        friendly_name,
        unique_name,
        params.boolean("ChannelOptimizedRouting") is True,
        now,
        now,
    )
    workspace.task_channels[channel.sid] = channel
    return respond(renderer(request).task_channel(channel), status=201)


async def fetch_task_channel(request: web.Request) -> web.StreamResponse:
    """GET .../TaskChannels/{sid or unique name}."""
    channel = workspace_of(request).channel(request.match_info["sid"])
    if channel is None:
        raise not_found(request.path)
    return respond(renderer(request).task_channel(channel))


async def list_task_channels(request: web.Request) -> web.StreamResponse:
    """GET .../TaskChannels."""
    items = list(workspace_of(request).task_channels.values())
    return respond(page_body(request, "channels", items, renderer(request).task_channel))


async def update_task_channel(request: web.Request) -> web.StreamResponse:
    """POST .../TaskChannels/{sid}."""
    channel = resource(request, workspace_of(request).task_channels)
    params = await form(request)
    channel.friendly_name = params.text("FriendlyName") or channel.friendly_name
    optimized = params.boolean("ChannelOptimizedRouting")
    if optimized is not None:
        channel.channel_optimized_routing = optimized
    channel.date_updated = state_of(request).now()
    return respond(renderer(request).task_channel(channel))


async def delete_task_channel(request: web.Request) -> web.StreamResponse:
    """DELETE .../TaskChannels/{sid}; refused while a task uses it."""
    workspace = workspace_of(request)
    channel = resource(request, workspace.task_channels)
    if any(t.task_channel_sid == channel.sid for t in workspace.tasks.values()):
        raise bad_parameter(f"TaskChannel {channel.sid} is in use and cannot be deleted")
    del workspace.task_channels[channel.sid]
    return web.Response(status=204)
