"""The engine's core: events, timers, moving tasks through workflow targets, and matching."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from escalator.simulator.clock import TimerHandle
from escalator.simulator.events import EventRecord
from escalator.simulator.matching import (
    eligible_workers,
    offer_order,
    select_filter,
    should_skip,
    target_options,
    targets_of,
)
from escalator.simulator.state import (
    ACTIVE_RESERVATION_STATUSES,
    Reservation,
    Task,
    TaskQueue,
    Worker,
    Workflow,
    Workspace,
    new_sid,
)

if TYPE_CHECKING:
    from escalator.simulator.state import SimulatorState

__all__ = ["MAX_RESERVATIONS", "TERMINAL_DELETE_AFTER", "Router"]

# Lifecycle page: canceled and completed tasks are deleted about 5 minutes later.
TERMINAL_DELETE_AFTER = 300
# A task is canceled after 1,000 reservations (pending -> reserved moves).
MAX_RESERVATIONS = 1000


def _epoch(moment: datetime) -> str:
    return str(int(moment.timestamp()))


class Router(ABC):
    """Events, timers, workflow targets and the matching loop; `Lifecycle` adds transitions."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self._timers: dict[tuple[str, str], TimerHandle] = {}
        self._idle = 0
        self._matching = False
        self._match_again = False
        state.events.subscribe(self._send_event_callback)

    @abstractmethod
    def cancel_task(self, workspace: Workspace, task: Task, reason: str) -> None:
        """Cancel a pending or reserved task."""

    @abstractmethod
    def _reserve(
        self, workspace: Workspace, task: Task, worker: Worker, queue: TaskQueue, workflow: Workflow
    ) -> Reservation:
        """Create a pending reservation of `task` for `worker`."""

    # --- time -----------------------------------------------------------------------------

    def now(self) -> datetime:
        """The simulator's time, whole seconds."""
        return self.state.now()

    def _schedule(self, kind: str, sid: str, delay: float, callback: Callable[[], None]) -> None:
        self._cancel(kind, sid)

        def fire() -> None:
            self._timers.pop((kind, sid), None)
            callback()

        self._timers[kind, sid] = self.state.clock.call_later(delay, fire)

    def _cancel(self, kind: str, sid: str) -> None:
        handle = self._timers.pop((kind, sid), None)
        if handle is not None:
            handle.cancel()

    def mark_idle(self, worker: Worker) -> None:
        """Record that `worker` changed activity or finished a task (longest-idle ordering)."""
        self._idle += 1
        worker.idle_mark = self._idle

    # --- events ---------------------------------------------------------------------------

    def emit(
        self,
        workspace: Workspace,
        event_type: str,
        description: str,
        *,
        task: Task | None = None,
        worker: Worker | None = None,
        reservation: Reservation | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> EventRecord:
        """Record an event with Twilio's callback fields for the resources it concerns."""
        moment = self.state.clock.now()
        if reservation is not None:
            resource_type, resource_sid = "Reservation", reservation.sid
        elif task is not None:
            resource_type, resource_sid = "Task", task.sid
        elif worker is not None:
            resource_type, resource_sid = "Worker", worker.sid
        else:
            resource_type, resource_sid = "Workspace", workspace.sid
        fields: dict[str, str] = {
            "EventType": event_type,
            "AccountSid": self.state.account_sid,
            "WorkspaceSid": workspace.sid,
            "WorkspaceName": workspace.friendly_name,
            "EventDescription": description,
            "ResourceType": resource_type,
            "ResourceSid": resource_sid,
            # The format is not documented; epoch seconds, as Twilio's callbacks send it.
            "Timestamp": _epoch(moment),
        }
        if task is not None:
            fields |= self._task_fields(workspace, task)
        if worker is not None:
            fields |= self._worker_fields(workspace, worker)
        if reservation is not None:
            fields["ReservationSid"] = reservation.sid
        fields |= dict(extra or {})
        record = EventRecord(
            sid=new_sid("EV"),
            workspace_sid=workspace.sid,
            event_type=event_type,
            description=description,
            resource_type=resource_type,
            resource_sid=resource_sid,
            date=moment,
            actor_type="account",
            actor_sid=self.state.account_sid,
            fields=fields,
        )
        self.state.events.append(record)
        return record

    def _task_fields(self, workspace: Workspace, task: Task) -> dict[str, str]:
        age = max(0, int((self.now() - task.date_created).total_seconds()))
        fields = {
            "TaskSid": task.sid,
            "TaskAttributes": task.attributes,
            "TaskAge": str(age),
            "TaskPriority": str(task.priority),
            "TaskAssignmentStatus": task.assignment_status,
            "TaskDateCreated": _epoch(task.date_created),
            "TaskVersion": str(task.revision),
            "TaskTimeout": str(task.timeout),
            "TaskChannelSid": task.task_channel_sid,
        }
        channel = workspace.task_channels.get(task.task_channel_sid)
        if channel is not None:
            fields["TaskChannelUniqueName"] = channel.unique_name
        if task.assignment_status == "canceled" and task.reason is not None:
            fields["TaskCanceledReason"] = task.reason
        if task.assignment_status == "completed" and task.reason is not None:
            fields["TaskCompletedReason"] = task.reason
        queue = workspace.task_queues.get(task.task_queue_sid or "")
        if queue is not None:
            fields |= {
                "TaskQueueSid": queue.sid,
                "TaskQueueName": queue.friendly_name,
                "TaskQueueTargetExpression": queue.target_workers,
            }
            if task.task_queue_entered_date is not None:
                fields["TaskQueueEnteredDate"] = _epoch(task.task_queue_entered_date)
        workflow = workspace.workflows.get(task.workflow_sid or "")
        if workflow is not None:
            fields |= {"WorkflowSid": workflow.sid, "WorkflowName": workflow.friendly_name}
        return fields

    def _worker_fields(self, workspace: Workspace, worker: Worker) -> dict[str, str]:
        activity = workspace.activities.get(worker.activity_sid)
        return {
            "WorkerSid": worker.sid,
            "WorkerName": worker.friendly_name,
            "WorkerAttributes": worker.attributes,
            "WorkerActivitySid": worker.activity_sid,
            "WorkerActivityName": activity.friendly_name if activity else "",
            "WorkerVersion": str(worker.revision),
        }

    def _send_event_callback(self, record: EventRecord) -> None:
        workspace = self.state.workspaces.get(record.workspace_sid)
        if workspace is None or not workspace.event_callback_url:
            return
        if workspace.events_filter:
            wanted = {t.strip() for t in workspace.events_filter.split(",") if t.strip()}
            if record.event_type not in wanted:
                return
        self.state.callbacks.send_event(workspace.event_callback_url, record)

    # --- routing --------------------------------------------------------------------------

    def task_created(self, workspace: Workspace, task: Task) -> None:
        """Route a new task through its workflow, start its TTL, and offer it."""
        task.base_priority = task.priority
        self.emit(workspace, "task.created", "Task created", task=task)
        workflow = workspace.workflows.get(task.workflow_sid or "")
        if workflow is not None:
            self.emit(workspace, "workflow.entered", "Task entered Workflow", task=task)
            self._route(workspace, task, workflow)
        # Task resource: Timeout is how long a task may live before it is assigned.
        self._schedule("ttl", task.sid, task.timeout, lambda: self._ttl_expired(workspace, task))
        self._offer_new(workspace, task)

    def _offer_new(self, workspace: Workspace, task: Task) -> None:
        # A new task frees nobody: tasks that were waiting before still cannot be placed, so
        # only the new one is offered (matching every waiting task on each create would make
        # a burst of creates quadratic).
        if self._matching:
            self._match_again = True
            return
        if not _anyone_free(workspace):
            return
        self._matching = True
        try:
            self._match_again = False
            self._offer(workspace, task)
            again = self._match_again
        finally:
            self._matching = False
        if again:
            self.match(workspace)

    def _route(self, workspace: Workspace, task: Task, workflow: Workflow) -> None:
        index = select_filter(workflow, json.loads(task.attributes or "{}"))
        task.filter_index = index
        if not targets_of(workflow, index):
            task.task_queue_sid = None
            return
        self._enter_target(workspace, task, workflow, 0)

    def _enter_target(
        self, workspace: Workspace, task: Task, workflow: Workflow, index: int
    ) -> None:
        targets = targets_of(workflow, task.filter_index)
        target = targets[index]
        first = task.task_queue_sid is None
        task.target_index = index
        task.step_expired = False
        # Workflow overview: a target's priority overrides the task's own.
        task.priority = target.priority if target.priority is not None else task.base_priority
        task.task_queue_sid = target.queue
        task.task_queue_entered_date = self.now()
        task.date_updated = self.now()
        task.revision += 1
        filter_name = (
            workflow.routing.filters[task.filter_index].friendly_name
            if task.filter_index is not None
            else "Default Filter"
        )
        extra = {
            "WorkflowFilterName": filter_name,
            "WorkflowFilterTargetIndex": str(index),
            "WorkflowFilterTargetExpression": target.expression.text if target.expression else "",
        }
        self.emit(
            workspace, "workflow.target-matched", "Task matched a target", task=task, extra=extra
        )
        queue_event = "task-queue.entered" if first else "task-queue.moved"
        self.emit(workspace, queue_event, "Task entered TaskQueue", task=task)
        timeouts = [t.timeout for t in targets[: index + 1]]
        if target.timeout is not None and None not in timeouts:
            # Timeout evaluation page: a target's timeout counts from the task's age, so the
            # deadline of target n is the sum of the timeouts of targets 0..n.
            deadline = sum(t or 0 for t in timeouts)
            delay = deadline - (self.now() - task.date_created).total_seconds()
            self._schedule(
                "step", task.sid, delay, lambda: self._step_expired(workspace, task, index)
            )
        else:
            self._cancel("step", task.sid)
        # Worker presence page: skip_if applies only when no reservation is made on entry.
        options = target_options(workflow, task.filter_index, index)
        if (
            options.skip_if is not None
            and self._offer(workspace, task) == 0
            and should_skip(workspace, target.queue, options)
        ):
            self._next_target(workspace, task, timed_out=False)

    def _step_expired(self, workspace: Workspace, task: Task, index: int) -> None:
        if task.sid not in workspace.tasks or task.target_index != index:
            return
        if task.assignment_status == "reserved":
            # The pending reservation is left to finish; the task moves on if it comes back.
            task.step_expired = True
        elif task.assignment_status == "pending":
            self._next_target(workspace, task, timed_out=True)
            self.match(workspace)

    def _next_target(self, workspace: Workspace, task: Task, *, timed_out: bool) -> None:
        workflow = workspace.workflows.get(task.workflow_sid or "")
        if workflow is None:
            return
        if timed_out:
            self.emit(workspace, "task-queue.timeout", "Task timed out of TaskQueue", task=task)
        if task.target_index + 1 < len(targets_of(workflow, task.filter_index)):
            self._enter_target(workspace, task, workflow, task.target_index + 1)
            return
        # Gotchas: when the last target's timeout expires the task is canceled.
        self.emit(workspace, "workflow.timeout", "Task timed out of Workflow", task=task)
        self.cancel_task(workspace, task, "Workflow Timeout")

    def _ttl_expired(self, workspace: Workspace, task: Task) -> None:
        if task.sid in workspace.tasks and task.assignment_status in ("pending", "reserved"):
            self.cancel_task(workspace, task, "Task TTL Exceeded")

    def task_attributes_changed(self, workspace: Workspace, task: Task) -> None:
        """Re-evaluate a pending task against its workflow and offer it again."""
        self.emit(workspace, "task.updated", "Task updated", task=task)
        workflow = workspace.workflows.get(task.workflow_sid or "")
        if workflow is not None and task.assignment_status == "pending":
            index = select_filter(workflow, json.loads(task.attributes or "{}"))
            if index != task.filter_index:
                task.filter_index = index
                if targets_of(workflow, index):
                    self._enter_target(workspace, task, workflow, 0)
        self.match(workspace)

    def task_priority_changed(self, workspace: Workspace, task: Task) -> None:
        """A REST priority change: remember it and offer again."""
        task.base_priority = task.priority
        self.emit(workspace, "task.updated", "Task updated", task=task)
        self.match(workspace)

    # --- matching -------------------------------------------------------------------------

    def match(self, workspace: Workspace) -> None:
        """Offer waiting tasks to eligible workers until nothing more can be reserved."""
        if self._matching:
            self._match_again = True
            return
        if not _anyone_free(workspace):
            # Nobody could take a task: skip walking every waiting task (which would make a
            # burst of creates quadratic).
            return
        self._matching = True
        try:
            while True:
                self._match_again = False
                made = sum(self._offer(workspace, task) for task in offer_order(workspace))
                if not made and not self._match_again:
                    break
        finally:
            self._matching = False

    def _offer(self, workspace: Workspace, task: Task) -> int:
        workflow = workspace.workflows.get(task.workflow_sid or "")
        queue = workspace.task_queues.get(task.task_queue_sid or "")
        if workflow is None or queue is None:
            return 0
        targets = targets_of(workflow, task.filter_index)
        if task.target_index >= len(targets):
            return 0
        target = targets[task.target_index]
        options = target_options(workflow, task.filter_index, task.target_index)
        made = 0
        for worker in eligible_workers(workspace, task, target, options):
            if not self._room_for_reservation(workspace, task, queue):
                break
            if task.reservation_count >= MAX_RESERVATIONS:
                self.cancel_task(workspace, task, "Task exceeded the maximum of 1000 reservations")
                break
            self._reserve(workspace, task, worker, queue, workflow)
            made += 1
        return made

    def _room_for_reservation(self, workspace: Workspace, task: Task, queue: TaskQueue) -> bool:
        if task.sid not in workspace.tasks or task.assignment_status not in ("pending", "reserved"):
            return False
        pending = sum(
            1
            for r in workspace.reservations.values()
            if r.task_sid == task.sid and r.status == "pending"
        )
        # TaskQueue MaxReservedWorkers: how many workers a task may be reserved for at once.
        return pending < queue.max_reserved_workers


def _anyone_free(workspace: Workspace) -> bool:
    """Whether some worker is in an available activity and, without multi-tasking, idle."""
    available = [
        worker
        for worker in workspace.workers.values()
        if (activity := workspace.activities.get(worker.activity_sid)) and activity.available
    ]
    if not available or workspace.multi_task_enabled:
        return bool(available)
    busy = {
        r.worker_sid
        for r in workspace.reservations.values()
        if r.status in ACTIVE_RESERVATION_STATUSES
    }
    return any(worker.sid not in busy for worker in available)
