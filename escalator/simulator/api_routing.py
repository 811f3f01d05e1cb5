"""Handlers for TaskQueues, Workflows and Workers."""

from __future__ import annotations

import json

from aiohttp import web

from escalator.simulator.configuration import parse_configuration
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
from escalator.simulator.params import Params, parse_expression
from escalator.simulator.state import TaskQueue, Worker, Workflow, Workspace, new_sid

__all__ = [
    "create_task_queue",
    "create_worker",
    "create_workflow",
    "delete_task_queue",
    "delete_worker",
    "delete_workflow",
    "fetch_task_queue",
    "fetch_worker",
    "fetch_workflow",
    "list_task_queues",
    "list_workers",
    "list_workflows",
    "update_task_queue",
    "update_worker",
    "update_workflow",
]

_DEFAULT_TARGET_WORKERS = "1==1"


def _activity_sid(workspace: Workspace, params: Params, name: str) -> str | None:
    sid = params.text(name)
    if sid is not None and sid not in workspace.activities:
        raise bad_parameter(f"Invalid {name}: activity {sid} not found")
    return sid


def _apply_queue_params(workspace: Workspace, queue: TaskQueue, params: Params) -> None:
    queue.friendly_name = params.text("FriendlyName") or queue.friendly_name
    if "TargetWorkers" in params:
        text = params.text("TargetWorkers") or _DEFAULT_TARGET_WORKERS
        queue.target_expression = parse_expression("TargetWorkers", text)
        queue.target_workers = text
    queue.max_reserved_workers = (
        params.integer("MaxReservedWorkers", minimum=1, maximum=50) or queue.max_reserved_workers
    )
    queue.task_order = params.choice("TaskOrder", ("FIFO", "LIFO")) or queue.task_order
    queue.reservation_activity_sid = (
        _activity_sid(workspace, params, "ReservationActivitySid") or queue.reservation_activity_sid
    )
    queue.assignment_activity_sid = (
        _activity_sid(workspace, params, "AssignmentActivitySid") or queue.assignment_activity_sid
    )


async def create_task_queue(request: web.Request) -> web.StreamResponse:
    """POST .../TaskQueues; `TargetWorkers` defaults to `1==1` and must parse."""
    workspace = workspace_of(request)
    params = await form(request)
    now = state_of(request).now()
    queue = TaskQueue(
        sid=new_sid("WQ"),
        workspace_sid=workspace.sid,
        friendly_name=params.required("FriendlyName"),
        target_workers=_DEFAULT_TARGET_WORKERS,
        target_expression=parse_expression("TargetWorkers", _DEFAULT_TARGET_WORKERS),
        max_reserved_workers=1,
        task_order="FIFO",
        reservation_activity_sid=None,
        assignment_activity_sid=None,
        date_created=now,
        date_updated=now,
    )
    _apply_queue_params(workspace, queue, params)
    workspace.task_queues[queue.sid] = queue
    state_of(request).engine.match(workspace)
    return respond(renderer(request).task_queue(workspace, queue), status=201)


async def fetch_task_queue(request: web.Request) -> web.StreamResponse:
    """GET .../TaskQueues/{sid}."""
    workspace = workspace_of(request)
    return respond(
        renderer(request).task_queue(workspace, resource(request, workspace.task_queues))
    )


async def list_task_queues(request: web.Request) -> web.StreamResponse:
    """GET .../TaskQueues, filtered by FriendlyName, EvaluateWorkerAttributes or WorkerSid."""
    workspace = workspace_of(request)
    params = query(request)
    name = params.text("FriendlyName")
    worker_attributes = params.json_object("EvaluateWorkerAttributes")
    worker_sid = params.text("WorkerSid")
    if worker_sid is not None:
        worker = workspace.workers.get(worker_sid)
        worker_attributes = json.loads(worker.attributes) if worker else {"__none__": True}
    items = [
        q
        for q in workspace.task_queues.values()
        if (name is None or q.friendly_name == name)
        and (worker_attributes is None or q.target_expression.matches(worker_attributes))
    ]
    if worker_sid is not None and worker_sid not in workspace.workers:
        items = []
    render = renderer(request)
    return respond(
        page_body(request, "task_queues", items, lambda q: render.task_queue(workspace, q))
    )


async def update_task_queue(request: web.Request) -> web.StreamResponse:
    """POST .../TaskQueues/{sid}."""
    workspace = workspace_of(request)
    queue = resource(request, workspace.task_queues)
    _apply_queue_params(workspace, queue, await form(request))
    queue.date_updated = state_of(request).now()
    state_of(request).engine.match(workspace)
    return respond(renderer(request).task_queue(workspace, queue))


async def delete_task_queue(request: web.Request) -> web.StreamResponse:
    """DELETE .../TaskQueues/{sid}; refused while a workflow routes to it."""
    workspace = workspace_of(request)
    queue = resource(request, workspace.task_queues)
    for workflow in workspace.workflows.values():
        routing = workflow.routing
        queues = {t.queue for f in routing.filters for t in f.targets} | {routing.default_queue}
        if queue.sid in queues:
            raise bad_parameter(
                f"TaskQueue {queue.sid} is used by Workflow {workflow.sid} and cannot be deleted"
            )
    del workspace.task_queues[queue.sid]
    return web.Response(status=204)


def _apply_workflow_params(workspace: Workspace, workflow: Workflow, params: Params) -> None:
    configuration = params.text("Configuration")
    if configuration is not None:
        workflow.routing = parse_configuration(configuration, workspace.task_queues)
        workflow.configuration = configuration
    workflow.friendly_name = params.text("FriendlyName") or workflow.friendly_name
    if "AssignmentCallbackUrl" in params:
        workflow.assignment_callback_url = params.text("AssignmentCallbackUrl") or None
    if "FallbackAssignmentCallbackUrl" in params:
        fallback = params.text("FallbackAssignmentCallbackUrl") or None
        workflow.fallback_assignment_callback_url = fallback
    workflow.task_reservation_timeout = (
        params.integer("TaskReservationTimeout", minimum=1, maximum=86_400)
        or workflow.task_reservation_timeout
    )


async def create_workflow(request: web.Request) -> web.StreamResponse:
    """POST .../Workflows; the configuration and its expressions are validated."""
    workspace = workspace_of(request)
    params = await form(request)
    friendly_name = params.required("FriendlyName")
    configuration = params.required("Configuration")
    now = state_of(request).now()
    workflow = Workflow(
        sid=new_sid("WW"),
        workspace_sid=workspace.sid,
        friendly_name=friendly_name,
        configuration=configuration,
        routing=parse_configuration(configuration, workspace.task_queues),
        assignment_callback_url=None,
        fallback_assignment_callback_url=None,
        task_reservation_timeout=120,
        date_created=now,
        date_updated=now,
    )
    _apply_workflow_params(workspace, workflow, params)
    workspace.workflows[workflow.sid] = workflow
    return respond(renderer(request).workflow(workflow), status=201)


async def fetch_workflow(request: web.Request) -> web.StreamResponse:
    """GET .../Workflows/{sid}."""
    return respond(renderer(request).workflow(resource(request, workspace_of(request).workflows)))


async def list_workflows(request: web.Request) -> web.StreamResponse:
    """GET .../Workflows, optionally by FriendlyName."""
    name = query(request).text("FriendlyName")
    items = [
        w
        for w in workspace_of(request).workflows.values()
        if name is None or w.friendly_name == name
    ]
    return respond(page_body(request, "workflows", items, renderer(request).workflow))


async def update_workflow(request: web.Request) -> web.StreamResponse:
    """POST .../Workflows/{sid}."""
    workspace = workspace_of(request)
    workflow = resource(request, workspace.workflows)
    _apply_workflow_params(workspace, workflow, await form(request))
    workflow.date_updated = state_of(request).now()
    state_of(request).engine.match(workspace)
    return respond(renderer(request).workflow(workflow))


async def delete_workflow(request: web.Request) -> web.StreamResponse:
    """DELETE .../Workflows/{sid}."""
    workspace = workspace_of(request)
    workflow = resource(request, workspace.workflows)
    del workspace.workflows[workflow.sid]
    return web.Response(status=204)


def _unique_worker_name(workspace: Workspace, name: str, sid: str | None = None) -> str:
    # TaskRouter: worker friendly names are unique case-insensitively within a workspace.
    for worker in workspace.workers.values():
        if worker.sid != sid and worker.friendly_name.lower() == name.lower():
            raise bad_parameter(f"Invalid FriendlyName: a worker named '{name}' already exists")
    return name


async def create_worker(request: web.Request) -> web.StreamResponse:
    """POST .../Workers; the worker starts in the workspace's default activity."""
    workspace = workspace_of(request)
    params = await form(request)
    name = _unique_worker_name(workspace, params.required("FriendlyName"))
    params.json_object("Attributes", max_length=4096)
    now = state_of(request).now()
    worker = Worker(
        sid=new_sid("WK"),
        workspace_sid=workspace.sid,
        friendly_name=name,
        activity_sid=_activity_sid(workspace, params, "ActivitySid")
        or workspace.default_activity_sid,
        attributes=params.text("Attributes") or "{}",
        date_created=now,
        date_updated=now,
        date_status_changed=now,
    )
    workspace.workers[worker.sid] = worker
    state_of(request).engine.worker_created(workspace, worker)
    return respond(renderer(request).worker(workspace, worker), status=201)


async def fetch_worker(request: web.Request) -> web.StreamResponse:
    """GET .../Workers/{sid}."""
    workspace = workspace_of(request)
    worker = resource(request, workspace.workers)
    return respond(renderer(request).worker(workspace, worker), headers=etag_headers(worker))


def _worker_in_queue(workspace: Workspace, worker: Worker, queue_sid: str) -> bool:
    queue = workspace.task_queues.get(queue_sid)
    return queue is not None and queue.target_expression.matches(json.loads(worker.attributes))


async def list_workers(request: web.Request) -> web.StreamResponse:
    """GET .../Workers with TaskRouter's filters."""
    workspace = workspace_of(request)
    params = query(request)
    expression = params.expression("TargetWorkersExpression")
    activity_name = params.text("ActivityName")
    activity_sid = params.text("ActivitySid")
    available = params.boolean("Available")
    name = params.text("FriendlyName")
    queue_sid = params.text("TaskQueueSid")
    queue_name = params.text("TaskQueueName")
    if queue_name is not None:
        queue_sid = next(
            (q.sid for q in workspace.task_queues.values() if q.friendly_name == queue_name), ""
        )
    items = []
    for worker in workspace.workers.values():
        activity = workspace.activities[worker.activity_sid]
        if (
            (activity_name is None or activity.friendly_name == activity_name)
            and (activity_sid is None or activity.sid == activity_sid)
            and (available is None or activity.available == available)
            and (name is None or worker.friendly_name == name)
            and (expression is None or expression.matches(json.loads(worker.attributes)))
            and (queue_sid is None or _worker_in_queue(workspace, worker, queue_sid))
        ):
            items.append(worker)
    render = renderer(request)
    return respond(
        page_body(request, "workers", items, lambda w: render.worker(workspace, w, listed=True))
    )


async def update_worker(request: web.Request) -> web.StreamResponse:
    """POST .../Workers/{sid}, honouring If-Match."""
    workspace = workspace_of(request)
    worker = resource(request, workspace.workers)
    check_if_match(request, worker)
    params = await form(request)
    now = state_of(request).now()
    engine = state_of(request).engine
    new_attributes = params.json_object("Attributes", max_length=4096) is not None
    activity_sid = _activity_sid(workspace, params, "ActivitySid")
    reject_pending = params.boolean("RejectPendingReservations") is True
    name = params.text("FriendlyName")
    if name:
        worker.friendly_name = _unique_worker_name(workspace, name, worker.sid)
    if new_attributes:
        worker.attributes = params.text("Attributes") or "{}"
    worker.date_updated = now
    worker.revision += 1
    if activity_sid is not None:
        engine.set_worker_activity(
            workspace, worker, activity_sid, reject_pending=reject_pending, rematch=False
        )
    if new_attributes:
        engine.worker_attributes_changed(workspace, worker)
    engine.match(workspace)
    return respond(renderer(request).worker(workspace, worker), headers=etag_headers(worker))


async def delete_worker(request: web.Request) -> web.StreamResponse:
    """DELETE .../Workers/{sid}, honouring If-Match."""
    workspace = workspace_of(request)
    worker = resource(request, workspace.workers)
    check_if_match(request, worker)
    state_of(request).engine.worker_deleted(workspace, worker)
    del workspace.workers[worker.sid]
    return web.Response(status=204)
