"""TaskRouter statistics: pure computations over the state and the event log; nothing changes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from escalator.simulator.events import EventRecord
from escalator.simulator.matching import queue_members
from escalator.simulator.resources import iso8601
from escalator.simulator.state import Task, TaskQueue, Worker, Workflow, Workspace

__all__ = [
    "QUEUE_CUMULATIVE_FIELDS",
    "TASK_STATUSES",
    "WORKFLOW_CUMULATIVE_FIELDS",
    "WORKSPACE_CUMULATIVE_FIELDS",
    "Scope",
    "Window",
    "cumulative",
    "queue_realtime",
    "workflow_realtime",
    "workspace_realtime",
]

# The statuses `tasks_by_status` counts; canceled and completed tasks stay in their queue
# until TaskRouter deletes them (about 5 minutes later, Task lifecycle page).
TASK_STATUSES = ("pending", "reserved", "assigned", "wrapping", "canceled", "completed")
# Tasks still waiting for a worker: a reserved task has an offer but no acceptance yet.
_WAITING = frozenset({"pending", "reserved"})

_COMMON_CUMULATIVE = (
    "avg_task_acceptance_time",
    "start_time",
    "end_time",
    "reservations_created",
    "reservations_accepted",
    "reservations_rejected",
    "reservations_timed_out",
    "reservations_canceled",
    "reservations_rescinded",
    "split_by_wait_time",
    "wait_duration_until_accepted",
    "wait_duration_until_canceled",
    "tasks_canceled",
    "tasks_completed",
    "tasks_deleted",
    "tasks_moved",
)
# Each resource's statistics fields, as the OpenAPI description lists them.
QUEUE_CUMULATIVE_FIELDS = (
    *_COMMON_CUMULATIVE,
    "tasks_entered",
    "wait_duration_in_queue_until_accepted",
)
WORKFLOW_CUMULATIVE_FIELDS = (*_COMMON_CUMULATIVE, "tasks_entered", "tasks_timed_out_in_workflow")
WORKSPACE_CUMULATIVE_FIELDS = (*_COMMON_CUMULATIVE, "tasks_created", "tasks_timed_out_in_workflow")

# Event type -> the cumulative counter it increments.
_COUNTED = {
    "reservation.created": "reservations_created",
    "reservation.accepted": "reservations_accepted",
    "reservation.rejected": "reservations_rejected",
    "reservation.timeout": "reservations_timed_out",
    "reservation.canceled": "reservations_canceled",
    "reservation.rescinded": "reservations_rescinded",
    "task.created": "tasks_created",
    "task.canceled": "tasks_canceled",
    "task.completed": "tasks_completed",
    "task.deleted": "tasks_deleted",
    "task-queue.moved": "tasks_moved",
    "workflow.timeout": "tasks_timed_out_in_workflow",
}


@dataclass(frozen=True)
class Window:
    """The interval a cumulative statistic covers, in the simulator's clock time."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Scope:
    """What a statistic counts: a workspace, optionally one queue or workflow and one channel."""

    workspace_sid: str
    task_queue_sid: str | None = None
    workflow_sid: str | None = None
    channel_sid: str | None = None

    def covers(self, record: EventRecord) -> bool:
        """Whether `record` concerns this scope."""
        if record.workspace_sid != self.workspace_sid:
            return False
        if self.task_queue_sid is not None and record.get("TaskQueueSid") != self.task_queue_sid:
            return False
        if self.workflow_sid is not None and record.get("WorkflowSid") != self.workflow_sid:
            return False
        return self.channel_sid is None or record.get("TaskChannelSid") == self.channel_sid

    def holds(self, task: Task) -> bool:
        """Whether `task` is currently in this scope."""
        if self.task_queue_sid is not None and task.task_queue_sid != self.task_queue_sid:
            return False
        if self.workflow_sid is not None and task.workflow_sid != self.workflow_sid:
            return False
        return self.channel_sid is None or task.task_channel_sid == self.channel_sid


# --- real-time ----------------------------------------------------------------------------


def _seconds(now: datetime, since: datetime | None) -> int:
    return max(0, int((now - since).total_seconds())) if since is not None else 0


def _activity_statistics(workspace: Workspace, workers: Iterable[Worker]) -> list[dict[str, Any]]:
    # Every activity is listed, with 0 where no worker is in it (OpenAPI examples).
    counts = Counter(w.activity_sid for w in workers)
    return [
        {"sid": a.sid, "friendly_name": a.friendly_name, "workers": counts.get(a.sid, 0)}
        for a in workspace.activities.values()
    ]


def _task_statistics(tasks: Sequence[Task], now: datetime) -> dict[str, Any]:
    by_status = Counter(t.assignment_status for t in tasks)
    by_priority = Counter(str(t.priority) for t in tasks)
    waiting = [t for t in tasks if t.assignment_status in _WAITING]
    oldest = min(waiting, key=lambda t: t.date_created, default=None)
    return {
        "tasks_by_status": {status: by_status.get(status, 0) for status in TASK_STATUSES},
        "tasks_by_priority": dict(sorted(by_priority.items(), key=lambda kv: int(kv[0]))),
        "total_tasks": len(tasks),
        "longest_task_waiting_age": _seconds(now, oldest.date_created) if oldest else 0,
        "longest_task_waiting_sid": oldest.sid if oldest else None,
    }


def _tasks(workspace: Workspace, scope: Scope) -> list[Task]:
    return [t for t in workspace.tasks.values() if scope.holds(t)]


def queue_realtime(
    workspace: Workspace, queue: TaskQueue, now: datetime, channel_sid: str | None = None
) -> dict[str, Any]:
    """A queue's workers by activity, its tasks by status and priority, and its oldest waiter."""
    members = queue_members(workspace, queue.sid)
    # OpenAPI, total_available_workers: workers of the queue in an `available` activity;
    # they "may already have active interactions or may have none", so capacity is not checked.
    available = [
        w
        for w in members
        if (activity := workspace.activities.get(w.activity_sid)) and activity.available
    ]
    tasks = _tasks(
        workspace, Scope(workspace.sid, task_queue_sid=queue.sid, channel_sid=channel_sid)
    )
    in_queue = [t for t in tasks if t.assignment_status in _WAITING]
    # OpenAPI: the relative age counts from when the task entered this queue, not its creation.
    first_in = min(
        in_queue, key=lambda t: t.task_queue_entered_date or t.date_created, default=None
    )
    return {
        "activity_statistics": _activity_statistics(workspace, members),
        "total_available_workers": len(available),
        # OpenAPI, total_eligible_workers: "independent of their Activity state".
        "total_eligible_workers": len(members),
        **_task_statistics(tasks, now),
        "longest_relative_task_age_in_queue": (
            _seconds(now, first_in.task_queue_entered_date or first_in.date_created)
            if first_in
            else 0
        ),
        "longest_relative_task_sid_in_queue": first_in.sid if first_in else None,
    }


def workflow_realtime(
    workspace: Workspace, workflow: Workflow, now: datetime, channel_sid: str | None = None
) -> dict[str, Any]:
    """The workflow's tasks by status and priority, and its longest-waiting task."""
    scope = Scope(workspace.sid, workflow_sid=workflow.sid, channel_sid=channel_sid)
    return _task_statistics(_tasks(workspace, scope), now)


def workspace_realtime(
    workspace: Workspace, now: datetime, channel_sid: str | None = None
) -> dict[str, Any]:
    """All workers by activity, all tasks by status and priority, and the longest waiter."""
    tasks = _tasks(workspace, Scope(workspace.sid, channel_sid=channel_sid))
    return {
        "activity_statistics": _activity_statistics(workspace, workspace.workers.values()),
        "total_workers": len(workspace.workers),
        **_task_statistics(tasks, now),
    }


# --- cumulative ---------------------------------------------------------------------------


def _durations(values: Sequence[int]) -> dict[str, int]:
    # Twilio shows zeros, not nulls, when nothing was counted (OpenAPI examples).
    if not values:
        return {"avg": 0, "min": 0, "max": 0, "total": 0}
    total = sum(values)
    return {
        "avg": round(total / len(values)),
        "min": min(values),
        "max": max(values),
        "total": total,
    }


def _age(record: EventRecord) -> int:
    # `TaskAge` is the task's age in seconds when the event happened (Event callbacks).
    return int(record.get("TaskAge") or 0)


def _age_in_queue(record: EventRecord) -> int:
    entered = record.get("TaskQueueEnteredDate")
    if entered is None:
        return _age(record)
    return max(0, int(record.date.timestamp()) - int(entered))


def _split(
    thresholds: Sequence[int], canceled: Sequence[int], accepted: Sequence[int]
) -> dict[str, Any] | None:
    if not thresholds:
        return None
    # Unverified at the boundary: a wait equal to the threshold counts as "below" (within it).
    return {
        str(limit): {
            side: {
                "tasks_canceled": sum(1 for age in canceled if (age > limit) == above),
                "reservations_accepted": sum(1 for age in accepted if (age > limit) == above),
            }
            for side, above in (("above", True), ("below", False))
        }
        for limit in thresholds
    }


def cumulative(
    events: Iterable[EventRecord],
    scope: Scope,
    window: Window,
    fields: Sequence[str],
    split_by_wait_time: Sequence[int] = (),
) -> dict[str, Any]:
    """Counts, averages and wait durations of the events in `scope` within `window`."""
    counts: Counter[str] = Counter()
    accepted: list[int] = []
    accepted_in_queue: list[int] = []
    canceled: list[int] = []
    for record in events:
        if not window.start <= record.date <= window.end or not scope.covers(record):
            continue
        event_type = record.event_type
        if event_type in _COUNTED:
            counts[_COUNTED[event_type]] += 1
        if event_type == "reservation.accepted":
            accepted.append(_age(record))
            accepted_in_queue.append(_age_in_queue(record))
        elif event_type == "task.canceled":
            canceled.append(_age(record))
        # A queue counts every task that entered it, first queue or moved in by a timeout;
        # a workflow or workspace counts tasks entering the workflow.
        entered = ("task-queue.entered", "task-queue.moved")
        if (event_type in entered) if scope.task_queue_sid else event_type == "workflow.entered":
            counts["tasks_entered"] += 1
    body: dict[str, Any] = {
        # OpenAPI: "the average time in seconds between Task creation and acceptance".
        "avg_task_acceptance_time": _durations(accepted)["avg"],
        "start_time": iso8601(window.start),
        "end_time": iso8601(window.end),
        "split_by_wait_time": _split(split_by_wait_time, canceled, accepted),
        "wait_duration_until_accepted": _durations(accepted),
        "wait_duration_until_canceled": _durations(canceled),
        "wait_duration_in_queue_until_accepted": _durations(accepted_in_queue),
    }
    return {name: body[name] if name in body else counts.get(name, 0) for name in fields}
