"""Handlers for Tasks: create (routed once through the workflow), fetch, list, update, delete."""

from __future__ import annotations

import json

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
from escalator.simulator.errors import bad_parameter
from escalator.simulator.etag import check_if_match, etag_headers
from escalator.simulator.paging import page_body
from escalator.simulator.params import Params
from escalator.simulator.state import Task, TaskChannel, Workflow, Workspace, new_sid

__all__ = ["create_task", "delete_task", "fetch_task", "list_tasks", "update_task"]

# TaskRouter limits: attributes 4,096 characters, priority 0..2^31-1, TTL 1..1,209,600 s.
MAX_ATTRIBUTES = 4096
MAX_PRIORITY = 2_147_483_647
MAX_TIMEOUT = 1_209_600
DEFAULT_TIMEOUT = 86_400
STATUSES = ("pending", "reserved", "assigned", "canceled", "completed", "wrapping")
# Which statuses a REST update may move a task to, from which statuses.
_TRANSITIONS = {
    "canceled": ("pending", "reserved"),
    "wrapping": ("assigned",),
    "completed": ("assigned", "wrapping"),
}
_ORDER_FIELDS = {
    "DateCreated": lambda t: t.date_created,
    "Priority": lambda t: t.priority,
    "VirtualStartTime": lambda t: t.date_created,
}


def _workflow(workspace: Workspace, params: Params) -> Workflow:
    sid = params.text("WorkflowSid")
    if sid is None:
        # TaskRouter: WorkflowSid may be omitted only when the workspace has exactly one.
        if len(workspace.workflows) != 1:
            raise bad_parameter(
                "Missing required parameter WorkflowSid in the post body"
                f" (the workspace has {len(workspace.workflows)} workflows)"
            )
        return next(iter(workspace.workflows.values()))
    workflow = workspace.workflows.get(sid)
    if workflow is None:
        raise bad_parameter(f"Invalid WorkflowSid: workflow {sid} not found")
    return workflow


def _channel(workspace: Workspace, params: Params) -> TaskChannel:
    name = params.text("TaskChannel") or "default"
    channel = workspace.channel(name)
    if channel is None:
        raise bad_parameter(f"Invalid TaskChannel: '{name}' not found")
    return channel


async def create_task(request: web.Request) -> web.StreamResponse:
    """POST .../Tasks: validate, then route through the workflow and offer to workers."""
    workspace = workspace_of(request)
    params = await form(request)
    params.json_object("Attributes", max_length=MAX_ATTRIBUTES)
    priority = params.integer("Priority", minimum=0, maximum=MAX_PRIORITY)
    timeout = params.integer("Timeout", minimum=1, maximum=MAX_TIMEOUT) or DEFAULT_TIMEOUT
    channel = _channel(workspace, params)
    workflow = _workflow(workspace, params)
    now = state_of(request).now()
    task = Task(
        sid=new_sid("WT"),
        workspace_sid=workspace.sid,
        attributes=params.text("Attributes") or "{}",
        assignment_status="pending",
        priority=priority or 0,
        timeout=timeout,
        task_channel_sid=channel.sid,
        workflow_sid=workflow.sid,
        task_queue_sid=None,
        task_queue_entered_date=None,
        date_created=now,
        date_updated=now,
    )
    workspace.tasks[task.sid] = task
    # Routed and offered at once: the answer may already show the task reserved.
    state_of(request).engine.task_created(workspace, task)
    return respond(renderer(request).task(workspace, task), status=201, headers=etag_headers(task))


async def fetch_task(request: web.Request) -> web.StreamResponse:
    """GET .../Tasks/{sid}, with its ETag."""
    workspace = workspace_of(request)
    task = resource(request, workspace.tasks)
    return respond(renderer(request).task(workspace, task), headers=etag_headers(task))


def _sort(tasks: list[Task], ordering: str) -> list[Task]:
    keys = []
    for part in ordering.split(","):
        field, _, direction = part.strip().partition(":")
        if field not in _ORDER_FIELDS or direction.lower() not in ("asc", "desc", ""):
            raise bad_parameter(
                f"Invalid Ordering '{ordering}': use DateCreated, Priority or"
                " VirtualStartTime with :asc or :desc"
            )
        keys.append((field, direction.lower() == "desc"))
    # Stable sorts applied from the last key to the first give a multi-key order.
    for field, descending in reversed(keys):
        tasks.sort(key=_ORDER_FIELDS[field], reverse=descending)
    return tasks


async def list_tasks(request: web.Request) -> web.StreamResponse:
    """GET .../Tasks with TaskRouter's filters, EvaluateTaskAttributes included."""
    workspace = workspace_of(request)
    params = query(request)
    statuses = params.values("AssignmentStatus")
    # The SDK sends one AssignmentStatus per value; commas are accepted too.
    wanted = set(statuses) if statuses else None
    if wanted is not None and not wanted <= set(STATUSES):
        raise bad_parameter(f"Invalid AssignmentStatus: must be among {', '.join(STATUSES)}")
    expression = params.expression("EvaluateTaskAttributes")
    priority = params.integer("Priority", minimum=0, maximum=MAX_PRIORITY)
    workflow_sid = params.text("WorkflowSid")
    queue_sid = params.text("TaskQueueSid")
    workflow_name = params.text("WorkflowName")
    queue_name = params.text("TaskQueueName")
    items = []
    for task in workspace.tasks.values():
        workflow = workspace.workflows.get(task.workflow_sid or "")
        queue = workspace.task_queues.get(task.task_queue_sid or "")
        if (
            (wanted is None or task.assignment_status in wanted)
            and (priority is None or task.priority == priority)
            and (workflow_sid is None or task.workflow_sid == workflow_sid)
            and (queue_sid is None or task.task_queue_sid == queue_sid)
            and (workflow_name is None or (workflow and workflow.friendly_name == workflow_name))
            and (queue_name is None or (queue and queue.friendly_name == queue_name))
            and (expression is None or expression.matches(json.loads(task.attributes)))
        ):
            items.append(task)
    ordering = params.text("Ordering")
    if ordering:
        items = _sort(items, ordering)
    render = renderer(request)
    return respond(
        page_body(request, "tasks", items, lambda t: render.task(workspace, t, listed=True))
    )


async def update_task(request: web.Request) -> web.StreamResponse:
    """POST .../Tasks/{sid}: status with Reason, or Attributes/Priority; honours If-Match."""
    workspace = workspace_of(request)
    task = resource(request, workspace.tasks)
    check_if_match(request, task)
    params = await form(request)
    status = params.choice("AssignmentStatus", STATUSES)
    attributes = params.json_object("Attributes", max_length=MAX_ATTRIBUTES)
    priority = params.integer("Priority", minimum=0, maximum=MAX_PRIORITY)
    if status is not None and attributes is not None:
        # TaskRouter refuses a status change and new attributes in one request.
        raise bad_parameter("AssignmentStatus and Attributes cannot be updated in one request")
    if status is not None and status != task.assignment_status:
        allowed = _TRANSITIONS.get(status, ())
        if task.assignment_status not in allowed:
            raise bad_parameter(
                f"Invalid AssignmentStatus: cannot move a {task.assignment_status} task to {status}"
            )
    engine = state_of(request).engine
    if attributes is not None:
        task.attributes = params.text("Attributes") or "{}"
    if priority is not None:
        task.priority = priority
    if "TaskChannel" in params:
        task.task_channel_sid = _channel(workspace, params).sid
    task.date_updated = state_of(request).now()
    task.revision += 1
    reason = params.text("Reason")
    if status == "canceled" and task.assignment_status != "canceled":
        engine.cancel_task(workspace, task, reason or "Task canceled")
    elif status == "wrapping" and task.assignment_status != "wrapping":
        engine.wrap_up_task(workspace, task, reason)
    elif status == "completed" and task.assignment_status != "completed":
        engine.complete_task(workspace, task, reason)
    if priority is not None:
        engine.task_priority_changed(workspace, task)
    if attributes is not None:
        engine.task_attributes_changed(workspace, task)
    return respond(renderer(request).task(workspace, task), headers=etag_headers(task))


async def delete_task(request: web.Request) -> web.StreamResponse:
    """DELETE .../Tasks/{sid}, honouring If-Match."""
    workspace = workspace_of(request)
    task = resource(request, workspace.tasks)
    check_if_match(request, task)
    state_of(request).engine.delete_task(workspace, task)
    return web.Response(status=204)
