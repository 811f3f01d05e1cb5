"""JSON renderers giving each resource Twilio's snake_case shape with absolute URLs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from escalator.simulator.events import EventRecord
from escalator.simulator.state import (
    Activity,
    Reservation,
    Task,
    TaskChannel,
    TaskQueue,
    Worker,
    Workflow,
    Workspace,
)

__all__ = ["Renderer", "iso8601"]


def iso8601(moment: datetime | None) -> str | None:
    """Twilio's date format, e.g. `2026-11-25T08:43:24Z`."""
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Renderer:
    """Renders resources for one request: URLs point back at the host the client used."""

    base: str
    account_sid: str
    now: datetime
    hide_attributes: bool = False

    @classmethod
    def for_request(
        cls, request: web.Request, account_sid: str, now: datetime, *, hide_attributes: bool = False
    ) -> Renderer:
        """A renderer whose URLs use the request's scheme and host."""
        return cls(f"{request.scheme}://{request.host}/v1", account_sid, now, hide_attributes)

    def _ws_url(self, workspace_sid: str) -> str:
        return f"{self.base}/Workspaces/{workspace_sid}"

    def _dates(self, created: datetime, updated: datetime) -> dict[str, Any]:
        return {"date_created": iso8601(created), "date_updated": iso8601(updated)}

    def workspace(self, ws: Workspace) -> dict[str, Any]:
        """A Workspace resource."""
        url = self._ws_url(ws.sid)
        children = ("activities", "workers", "task_queues", "workflows", "tasks", "events")
        paths = ("Activities", "Workers", "TaskQueues", "Workflows", "Tasks", "Events")
        links = {name: f"{url}/{path}" for name, path in zip(children, paths, strict=True)}
        links |= {
            "task_channels": f"{url}/TaskChannels",
            "statistics": f"{url}/Statistics",
            "real_time_statistics": f"{url}/RealTimeStatistics",
            "cumulative_statistics": f"{url}/CumulativeStatistics",
        }
        return {
            "account_sid": self.account_sid,
            **self._dates(ws.date_created, ws.date_updated),
            "default_activity_name": ws.activities[ws.default_activity_sid].friendly_name,
            "default_activity_sid": ws.default_activity_sid,
            "event_callback_url": ws.event_callback_url,
            "events_filter": ws.events_filter,
            "friendly_name": ws.friendly_name,
            "multi_task_enabled": ws.multi_task_enabled,
            "sid": ws.sid,
            "timeout_activity_name": ws.activities[ws.timeout_activity_sid].friendly_name,
            "timeout_activity_sid": ws.timeout_activity_sid,
            "prioritize_queue_order": ws.prioritize_queue_order,
            "url": url,
            "links": links,
        }

    def activity(self, activity: Activity) -> dict[str, Any]:
        """An Activity resource."""
        ws_url = self._ws_url(activity.workspace_sid)
        return {
            "account_sid": self.account_sid,
            "available": activity.available,
            **self._dates(activity.date_created, activity.date_updated),
            "friendly_name": activity.friendly_name,
            "sid": activity.sid,
            "workspace_sid": activity.workspace_sid,
            "url": f"{ws_url}/Activities/{activity.sid}",
            "links": {"workspace": ws_url},
        }

    def task_channel(self, channel: TaskChannel) -> dict[str, Any]:
        """A TaskChannel resource."""
        ws_url = self._ws_url(channel.workspace_sid)
        return {
            "account_sid": self.account_sid,
            **self._dates(channel.date_created, channel.date_updated),
            "friendly_name": channel.friendly_name,
            "sid": channel.sid,
            "unique_name": channel.unique_name,
            "workspace_sid": channel.workspace_sid,
            "channel_optimized_routing": channel.channel_optimized_routing,
            "url": f"{ws_url}/TaskChannels/{channel.sid}",
            "links": {"workspace": ws_url},
        }

    def task_queue(self, ws: Workspace, queue: TaskQueue) -> dict[str, Any]:
        """A TaskQueue resource."""
        ws_url = self._ws_url(ws.sid)
        url = f"{ws_url}/TaskQueues/{queue.sid}"
        reservation = ws.activities.get(queue.reservation_activity_sid or "")
        assignment = ws.activities.get(queue.assignment_activity_sid or "")
        links = {
            "workspace": ws_url,
            "statistics": f"{url}/Statistics",
            "real_time_statistics": f"{url}/RealTimeStatistics",
            "cumulative_statistics": f"{url}/CumulativeStatistics",
            "list_statistics": f"{ws_url}/TaskQueues/Statistics",
        }
        if assignment:
            links["assignment_activity"] = f"{ws_url}/Activities/{assignment.sid}"
        if reservation:
            links["reservation_activity"] = f"{ws_url}/Activities/{reservation.sid}"
        return {
            "account_sid": self.account_sid,
            "assignment_activity_sid": assignment.sid if assignment else None,
            "assignment_activity_name": assignment.friendly_name if assignment else None,
            **self._dates(queue.date_created, queue.date_updated),
            "friendly_name": queue.friendly_name,
            "max_reserved_workers": queue.max_reserved_workers,
            "reservation_activity_sid": reservation.sid if reservation else None,
            "reservation_activity_name": reservation.friendly_name if reservation else None,
            "sid": queue.sid,
            "target_workers": queue.target_workers,
            "task_order": queue.task_order,
            "url": url,
            "workspace_sid": ws.sid,
            "links": links,
        }

    def worker(self, ws: Workspace, worker: Worker, *, listed: bool = False) -> dict[str, Any]:
        """A Worker resource."""
        ws_url = self._ws_url(ws.sid)
        url = f"{ws_url}/Workers/{worker.sid}"
        activity = ws.activities[worker.activity_sid]
        return {
            "account_sid": self.account_sid,
            "activity_name": activity.friendly_name,
            "activity_sid": activity.sid,
            "attributes": None if listed and self.hide_attributes else worker.attributes,
            "available": activity.available,
            **self._dates(worker.date_created, worker.date_updated),
            "date_status_changed": iso8601(worker.date_status_changed),
            "friendly_name": worker.friendly_name,
            "sid": worker.sid,
            "workspace_sid": ws.sid,
            "url": url,
            "links": {
                "activity": f"{ws_url}/Activities/{activity.sid}",
                "workspace": ws_url,
                "channels": f"{url}/Channels",
                "reservations": f"{url}/Reservations",
                "statistics": f"{url}/Statistics",
                "cumulative_statistics": f"{ws_url}/Workers/CumulativeStatistics",
                "real_time_statistics": f"{ws_url}/Workers/RealTimeStatistics",
                "worker_statistics": f"{url}/Statistics",
                "worker_channels": f"{url}/Channels",
            },
        }

    def workflow(self, workflow: Workflow) -> dict[str, Any]:
        """A Workflow resource."""
        ws_url = self._ws_url(workflow.workspace_sid)
        url = f"{ws_url}/Workflows/{workflow.sid}"
        return {
            "account_sid": self.account_sid,
            "assignment_callback_url": workflow.assignment_callback_url,
            "configuration": workflow.configuration,
            **self._dates(workflow.date_created, workflow.date_updated),
            "document_content_type": "application/json",
            "fallback_assignment_callback_url": workflow.fallback_assignment_callback_url,
            "friendly_name": workflow.friendly_name,
            "sid": workflow.sid,
            "task_reservation_timeout": workflow.task_reservation_timeout,
            "workspace_sid": workflow.workspace_sid,
            "url": url,
            "links": {
                "statistics": f"{url}/Statistics",
                "real_time_statistics": f"{url}/RealTimeStatistics",
                "cumulative_statistics": f"{url}/CumulativeStatistics",
            },
        }

    def task(self, ws: Workspace, task: Task, *, listed: bool = False) -> dict[str, Any]:
        """A Task resource."""
        ws_url = self._ws_url(ws.sid)
        url = f"{ws_url}/Tasks/{task.sid}"
        queue = ws.task_queues.get(task.task_queue_sid or "")
        workflow = ws.workflows.get(task.workflow_sid or "")
        channel = ws.task_channels.get(task.task_channel_sid)
        links = {"workspace": ws_url, "reservations": f"{url}/Reservations"}
        if queue:
            links["task_queue"] = f"{ws_url}/TaskQueues/{queue.sid}"
        if workflow:
            links["workflow"] = f"{ws_url}/Workflows/{workflow.sid}"
        return {
            "account_sid": self.account_sid,
            "age": max(0, int((self.now - task.date_created).total_seconds())),
            "assignment_status": task.assignment_status,
            "attributes": None if listed and self.hide_attributes else task.attributes,
            "addons": "{}",
            **self._dates(task.date_created, task.date_updated),
            "task_queue_entered_date": iso8601(task.task_queue_entered_date),
            "priority": task.priority,
            "reason": task.reason,
            "sid": task.sid,
            "task_queue_sid": task.task_queue_sid,
            "task_queue_friendly_name": queue.friendly_name if queue else None,
            "task_channel_sid": task.task_channel_sid,
            "task_channel_unique_name": channel.unique_name if channel else None,
            "timeout": task.timeout,
            "workflow_sid": task.workflow_sid,
            "workflow_friendly_name": workflow.friendly_name if workflow else None,
            "workspace_sid": ws.sid,
            "url": url,
            "links": links,
            "virtual_start_time": iso8601(task.date_created),
            "ignore_capacity": False,
            "routing_target": None,
        }

    def reservation(
        self, ws: Workspace, reservation: Reservation, *, via_worker: bool = False
    ) -> dict[str, Any]:
        """A Reservation, addressed under its task or (`via_worker`) under its worker."""
        ws_url = self._ws_url(ws.sid)
        task_url = f"{ws_url}/Tasks/{reservation.task_sid}"
        worker_url = f"{ws_url}/Workers/{reservation.worker_sid}"
        parent = worker_url if via_worker else task_url
        worker = ws.workers.get(reservation.worker_sid)
        return {
            "account_sid": self.account_sid,
            **self._dates(reservation.date_created, reservation.date_updated),
            "reservation_status": reservation.status,
            "sid": reservation.sid,
            "task_sid": reservation.task_sid,
            "worker_name": worker.friendly_name if worker else None,
            "worker_sid": reservation.worker_sid,
            "workspace_sid": ws.sid,
            "url": f"{parent}/Reservations/{reservation.sid}",
            "links": {"task": task_url, "worker": worker_url, "workspace": ws_url},
        }

    def event(self, record: EventRecord) -> dict[str, Any]:
        """An Event resource; `event_data` holds the callback's event-specific fields."""
        ws_url = self._ws_url(record.workspace_sid)
        accounts = f"{self.base.removesuffix('/v1')}/2010-04-01/Accounts"
        collections = {
            "Task": "Tasks",
            "Worker": "Workers",
            "Workflow": "Workflows",
            "Activity": "Activities",
        }
        if record.resource_type == "Reservation":
            resource_url = (
                f"{ws_url}/Tasks/{record.get('TaskSid')}/Reservations/{record.resource_sid}"
            )
        elif record.resource_type in collections:
            resource_url = f"{ws_url}/{collections[record.resource_type]}/{record.resource_sid}"
        else:
            resource_url = ws_url
        return {
            "account_sid": self.account_sid,
            "actor_sid": record.actor_sid,
            "actor_type": record.actor_type,
            "actor_url": f"{accounts}/{record.actor_sid}.json",
            "description": record.description,
            "event_data": record.data,
            "event_date": iso8601(record.date),
            "event_date_ms": int(record.date.timestamp() * 1000),
            "event_type": record.event_type,
            "resource_sid": record.resource_sid,
            "resource_type": record.resource_type,
            "resource_url": resource_url,
            "sid": record.sid,
            "source": "twilio",
            "source_ip_address": None,
            "url": f"{ws_url}/Events/{record.sid}",
            "workspace_sid": record.workspace_sid,
        }
