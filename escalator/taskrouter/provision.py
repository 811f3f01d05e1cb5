"""Create the TaskRouter workspace a routing file describes, through the twilio SDK."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from escalator.errors import PermanentTwilioError
from escalator.routing import Target, WorkspaceSpec

__all__ = ["ProvisionedWorkspace", "provision_workspace", "workflow_configuration"]


@dataclass(frozen=True, slots=True)
class ProvisionedWorkspace:
    """The SIDs of what was created."""

    workspace_sid: str
    workflow_sid: str
    activities: dict[str, str] = field(default_factory=dict)
    task_queues: dict[str, str] = field(default_factory=dict)
    workers: dict[str, str] = field(default_factory=dict)


def _target(target: Target, queues: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {"queue": queues[target.queue]}
    if target.timeout is not None:
        result["timeout"] = target.timeout
    if target.priority is not None:
        result["priority"] = target.priority
    if target.expression is not None:
        result["expression"] = target.expression
    return result


def workflow_configuration(spec: WorkspaceSpec, queues: dict[str, str]) -> str:
    """The workflow's ``Configuration`` JSON, with queue names resolved to SIDs."""
    workflow = spec.workflow
    routing = {
        "filters": [
            {
                "filter_friendly_name": item.name,
                "expression": item.expression,
                "targets": [_target(target, queues) for target in item.targets],
            }
            for item in workflow.filters
        ],
        "default_filter": {"queue": queues[workflow.default_queue]},
    }
    return json.dumps({"task_routing": routing})


async def provision_workspace(
    client: Client,
    spec: WorkspaceSpec,
    *,
    event_callback_url: str | None = None,
    assignment_callback_url: str | None = None,
    with_demo_workers: bool = True,
) -> ProvisionedWorkspace:
    """Create a new workspace with the activities, queues, workflow and workers of ``spec``."""
    try:
        return await _provision(
            client, spec, event_callback_url, assignment_callback_url, with_demo_workers
        )
    except TwilioRestException as exc:
        raise PermanentTwilioError(
            f"provisioning failed: {exc.msg}", status=int(exc.status), code=exc.code
        ) from exc


async def _provision(
    client: Client,
    spec: WorkspaceSpec,
    event_callback_url: str | None,
    assignment_callback_url: str | None,
    with_demo_workers: bool,
) -> ProvisionedWorkspace:
    v1 = client.taskrouter.v1
    options: dict[str, Any] = {"friendly_name": spec.friendly_name}
    if event_callback_url:
        options["event_callback_url"] = event_callback_url
    workspace = await v1.workspaces.create_async(**options)
    ws = v1.workspaces(workspace.sid)

    existing = {a.friendly_name: a.sid for a in await ws.activities.list_async()}
    activities: dict[str, str] = {}
    for activity in spec.activities:
        sid = existing.get(activity.name)
        if sid is None:
            created = await ws.activities.create_async(
                friendly_name=activity.name, available=activity.available
            )
            sid = created.sid
        activities[activity.name] = str(sid)
    await ws.update_async(timeout_activity_sid=activities[spec.timeout_activity])

    queues: dict[str, str] = {}
    for queue in spec.task_queues:
        created = await ws.task_queues.create_async(
            friendly_name=queue.name, target_workers=queue.target_workers
        )
        queues[queue.name] = str(created.sid)

    workflow_options: dict[str, Any] = {
        "friendly_name": spec.workflow.friendly_name,
        "configuration": workflow_configuration(spec, queues),
        "task_reservation_timeout": spec.workflow.task_reservation_timeout,
    }
    if assignment_callback_url:
        workflow_options["assignment_callback_url"] = assignment_callback_url
    workflow = await ws.workflows.create_async(**workflow_options)

    workers: dict[str, str] = {}
    for worker in spec.demo_workers if with_demo_workers else ():
        created = await ws.workers.create_async(
            friendly_name=worker.name,
            activity_sid=activities[worker.activity],
            attributes=json.dumps(worker.attributes),
        )
        workers[worker.name] = str(created.sid)

    return ProvisionedWorkspace(
        workspace_sid=str(workspace.sid),
        workflow_sid=str(workflow.sid),
        activities=activities,
        task_queues=queues,
        workers=workers,
    )
