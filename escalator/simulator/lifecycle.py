"""Reservation, task and worker transitions, with the events TaskRouter emits for each."""

from __future__ import annotations

from collections.abc import Mapping

from escalator.simulator.router import MAX_RESERVATIONS, TERMINAL_DELETE_AFTER, Router
from escalator.simulator.state import (
    Reservation,
    Task,
    TaskQueue,
    Worker,
    Workflow,
    Workspace,
    new_sid,
)

__all__ = ["Lifecycle", "TransitionError"]


class TransitionError(ValueError):
    """A transition TaskRouter refuses, e.g. accepting a reservation that is not pending."""


class Lifecycle(Router):
    """Transitions of reservations, tasks and workers."""

    # --- reservations ---------------------------------------------------------------------

    def _reserve(
        self, workspace: Workspace, task: Task, worker: Worker, queue: TaskQueue, workflow: Workflow
    ) -> Reservation:
        now = self.now()
        reservation = Reservation(
            sid=new_sid("WR"),
            workspace_sid=workspace.sid,
            task_sid=task.sid,
            worker_sid=worker.sid,
            task_queue_sid=queue.sid,
            workflow_sid=workflow.sid,
            status="pending",
            date_created=now,
            date_updated=now,
        )
        workspace.reservations[reservation.sid] = reservation
        task.reservation_count += 1
        if task.assignment_status != "reserved":
            task.assignment_status = "reserved"
            task.revision += 1
        task.date_updated = now
        # Reservations page: without an answer within TaskReservationTimeout it times out.
        self._schedule(
            "reservation",
            reservation.sid,
            workflow.task_reservation_timeout,
            lambda: self.time_out_reservation(workspace, reservation),
        )
        self.emit(
            workspace,
            "reservation.created",
            f"Reservation {reservation.sid} created for {worker.friendly_name}",
            task=task,
            worker=worker,
            reservation=reservation,
        )
        if workflow.assignment_callback_url and reservation.status == "pending":
            params = {
                "AccountSid": self.state.account_sid,
                "WorkspaceSid": workspace.sid,
                "WorkflowSid": workflow.sid,
                "TaskQueueSid": queue.sid,
                "WorkerSid": worker.sid,
                "WorkerAttributes": worker.attributes,
                "TaskSid": task.sid,
                "TaskAttributes": task.attributes,
                "TaskAge": str(max(0, int((now - task.date_created).total_seconds()))),
                "TaskPriority": str(task.priority),
                "ReservationSid": reservation.sid,
                "Timestamp": str(int(self.state.clock.now().timestamp())),
            }
            self.state.callbacks.send_assignment(
                workspace.sid,
                reservation.sid,
                [
                    u
                    for u in (
                        workflow.assignment_callback_url,
                        workflow.fallback_assignment_callback_url,
                    )
                    if u
                ],
                params,
            )
        return reservation

    def _settle(self, workspace: Workspace, reservation: Reservation, status: str) -> None:
        reservation.status = status
        reservation.date_updated = self.now()
        reservation.revision += 1
        self._cancel("reservation", reservation.sid)

    def _parts(self, workspace: Workspace, reservation: Reservation) -> tuple[Task, Worker]:
        return workspace.tasks[reservation.task_sid], workspace.workers[reservation.worker_sid]

    def require(self, reservation: Reservation, *statuses: str) -> None:
        """Raise `TransitionError` unless the reservation is in one of `statuses`."""
        if reservation.status not in statuses:
            wanted = " or ".join(statuses)
            raise TransitionError(
                f"Reservation {reservation.sid} is {reservation.status}, not {wanted}"
            )

    def accept_reservation(
        self,
        workspace: Workspace,
        reservation: Reservation,
        *,
        instruction: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> None:
        """Accept: the task is assigned and its other pending reservations are rescinded."""
        self.require(reservation, "pending")
        task, worker = self._parts(workspace, reservation)
        self._settle(workspace, reservation, "accepted")
        reservation.instruction = instruction or "accept"
        reservation.instruction_params = dict(params or {})
        task.assignment_status = "assigned"
        task.date_updated = self.now()
        task.revision += 1
        self._cancel("step", task.sid)
        self._cancel("ttl", task.sid)
        self.emit(
            workspace,
            "reservation.accepted",
            f"Reservation {reservation.sid} accepted by {worker.friendly_name}",
            task=task,
            worker=worker,
            reservation=reservation,
        )
        for other in self._reservations_of(workspace, task, "pending"):
            # Only one worker gets a multi-reservation task; the others' offers are rescinded.
            self._settle(workspace, other, "rescinded")
            self.emit(
                workspace,
                "reservation.rescinded",
                f"Reservation {other.sid} rescinded",
                task=task,
                worker=workspace.workers[other.worker_sid],
                reservation=other,
            )
        queue = workspace.task_queues.get(reservation.task_queue_sid)
        if queue and queue.assignment_activity_sid and not workspace.multi_task_enabled:
            # TaskQueue AssignmentActivitySid: the worker's activity once a task is accepted.
            self.set_worker_activity(workspace, worker, queue.assignment_activity_sid)
        self.match(workspace)

    def reject_reservation(
        self, workspace: Workspace, reservation: Reservation, *, activity_sid: str | None = None
    ) -> None:
        """Reject: the worker is not offered this task again; the task waits for another."""
        self.require(reservation, "pending")
        task, worker = self._parts(workspace, reservation)
        self._settle(workspace, reservation, "rejected")
        task.rejected_workers.add(worker.sid)
        self.emit(
            workspace,
            "reservation.rejected",
            f"Reservation {reservation.sid} rejected by {worker.friendly_name}",
            task=task,
            worker=worker,
            reservation=reservation,
        )
        if activity_sid is not None:
            self.set_worker_activity(workspace, worker, activity_sid, rematch=False)
        self._release(workspace, task)
        self.match(workspace)

    def time_out_reservation(self, workspace: Workspace, reservation: Reservation) -> None:
        """No answer in time: the worker moves to the workspace's timeout activity."""
        if reservation.status != "pending" or reservation.task_sid not in workspace.tasks:
            return
        task, worker = self._parts(workspace, reservation)
        self._settle(workspace, reservation, "timeout")
        self.emit(
            workspace,
            "reservation.timeout",
            f"Reservation {reservation.sid} timed out",
            task=task,
            worker=worker,
            reservation=reservation,
        )
        # Gotchas, the timeout cascade: the worker lands in TimeoutActivitySid.
        self.set_worker_activity(workspace, worker, workspace.timeout_activity_sid, rematch=False)
        self._release(workspace, task)
        self.match(workspace)

    def _release(self, workspace: Workspace, task: Task) -> None:
        if task.assignment_status != "reserved" or self._reservations_of(
            workspace, task, "pending"
        ):
            return
        task.assignment_status = "pending"
        task.date_updated = self.now()
        task.revision += 1
        if task.step_expired:
            self._next_target(workspace, task, timed_out=True)
        if task.reservation_count >= MAX_RESERVATIONS and task.assignment_status == "pending":
            self.cancel_task(workspace, task, "Task exceeded the maximum of 1000 reservations")

    def _reservations_of(
        self, workspace: Workspace, task: Task, *statuses: str
    ) -> list[Reservation]:
        return [
            r
            for r in workspace.reservations.values()
            if r.task_sid == task.sid and r.status in statuses
        ]

    # --- tasks ----------------------------------------------------------------------------

    def cancel_task(self, workspace: Workspace, task: Task, reason: str) -> None:
        """Cancel a pending or reserved task; its pending reservations are canceled too."""
        if task.assignment_status not in ("pending", "reserved"):
            raise TransitionError(f"Task {task.sid} is {task.assignment_status}: cannot cancel")
        pending = self._reservations_of(workspace, task, "pending")
        for reservation in pending:
            self._settle(workspace, reservation, "canceled")
        self._finish(workspace, task, "canceled", reason)
        self.emit(workspace, "task.canceled", reason, task=task)
        for reservation in pending:
            self.emit(
                workspace,
                "reservation.canceled",
                f"Reservation {reservation.sid} canceled",
                task=task,
                worker=workspace.workers[reservation.worker_sid],
                reservation=reservation,
            )
        self.match(workspace)

    def wrap_up_task(self, workspace: Workspace, task: Task, reason: str | None = None) -> None:
        """Move an assigned task to wrapping; its accepted reservation wraps up too."""
        if task.assignment_status != "assigned":
            raise TransitionError(f"Task {task.sid} is {task.assignment_status}: cannot wrap up")
        task.assignment_status = "wrapping"
        task.reason = reason
        task.date_updated = self.now()
        task.revision += 1
        self.emit(workspace, "task.wrapup", "Task wrapping up", task=task)
        for reservation in self._reservations_of(workspace, task, "accepted"):
            self._settle(workspace, reservation, "wrapping")
            self.emit(
                workspace,
                "reservation.wrapup",
                f"Reservation {reservation.sid} wrapping up",
                task=task,
                worker=workspace.workers[reservation.worker_sid],
                reservation=reservation,
            )

    def complete_task(self, workspace: Workspace, task: Task, reason: str | None = None) -> None:
        """Complete an assigned or wrapping task and its reservation; the worker is free again."""
        if task.assignment_status not in ("assigned", "wrapping"):
            raise TransitionError(f"Task {task.sid} is {task.assignment_status}: cannot complete")
        held = self._reservations_of(workspace, task, "accepted", "wrapping")
        for reservation in held:
            self._settle(workspace, reservation, "completed")
        self._finish(workspace, task, "completed", reason)
        self.emit(workspace, "task.completed", reason or "Task completed", task=task)
        for reservation in held:
            worker = workspace.workers[reservation.worker_sid]
            self.mark_idle(worker)
            self.emit(
                workspace,
                "reservation.completed",
                f"Reservation {reservation.sid} completed",
                task=task,
                worker=worker,
                reservation=reservation,
            )
        self.match(workspace)

    def _finish(self, workspace: Workspace, task: Task, status: str, reason: str | None) -> None:
        task.assignment_status = status
        task.reason = reason
        task.date_updated = self.now()
        task.revision += 1
        for kind in ("ttl", "step"):
            self._cancel(kind, task.sid)
        # Lifecycle page: canceled and completed tasks are deleted about 5 minutes later.
        self._schedule(
            "delete", task.sid, TERMINAL_DELETE_AFTER, lambda: self.delete_task(workspace, task)
        )

    def delete_task(self, workspace: Workspace, task: Task) -> None:
        """Remove a task and its reservations; pending reservations are canceled first."""
        if task.sid not in workspace.tasks:
            return
        for reservation in self._reservations_of(workspace, task, "pending"):
            self._settle(workspace, reservation, "canceled")
            self.emit(
                workspace,
                "reservation.canceled",
                f"Reservation {reservation.sid} canceled",
                task=task,
                worker=workspace.workers[reservation.worker_sid],
                reservation=reservation,
            )
        for kind in ("ttl", "step", "delete"):
            self._cancel(kind, task.sid)
        self.emit(workspace, "task.deleted", "Task deleted", task=task)
        del workspace.tasks[task.sid]
        for sid in [r.sid for r in workspace.reservations.values() if r.task_sid == task.sid]:
            del workspace.reservations[sid]
        self.match(workspace)

    # --- workers --------------------------------------------------------------------------

    def worker_created(self, workspace: Workspace, worker: Worker) -> None:
        """A new worker: record it and offer it waiting tasks."""
        self.mark_idle(worker)
        self.emit(workspace, "worker.created", "Worker created", worker=worker)
        self.match(workspace)

    def worker_attributes_changed(self, workspace: Workspace, worker: Worker) -> None:
        """New attributes may change which queues the worker serves."""
        self.emit(workspace, "worker.attributes.update", "Worker attributes updated", worker=worker)
        self.match(workspace)

    def worker_deleted(self, workspace: Workspace, worker: Worker) -> None:
        """A deleted worker's pending reservations are canceled."""
        for reservation in list(workspace.reservations.values()):
            if reservation.worker_sid == worker.sid and reservation.status == "pending":
                task = workspace.tasks[reservation.task_sid]
                self._settle(workspace, reservation, "canceled")
                self.emit(
                    workspace,
                    "reservation.canceled",
                    f"Reservation {reservation.sid} canceled",
                    task=task,
                    worker=worker,
                    reservation=reservation,
                )
                self._release(workspace, task)
        self.emit(workspace, "worker.deleted", "Worker deleted", worker=worker)
        self.match(workspace)

    def set_worker_activity(
        self,
        workspace: Workspace,
        worker: Worker,
        activity_sid: str,
        *,
        reject_pending: bool = False,
        rematch: bool = True,
    ) -> None:
        """Change a worker's activity (event `worker.activity.update`) and offer tasks again."""
        if activity_sid not in workspace.activities:
            raise TransitionError(f"Activity {activity_sid} not found")
        if activity_sid != worker.activity_sid:
            previous = workspace.activities[worker.activity_sid]
            current = workspace.activities[activity_sid]
            now = self.now()
            seconds = max(0, int((now - worker.date_status_changed).total_seconds()))
            worker.activity_sid = activity_sid
            worker.date_status_changed = now
            worker.date_updated = now
            worker.revision += 1
            self.mark_idle(worker)
            self.emit(
                workspace,
                "worker.activity.update",
                f"Worker {worker.friendly_name} updated to {current.friendly_name}",
                worker=worker,
                extra={
                    "WorkerPreviousActivitySid": previous.sid,
                    "WorkerPreviousActivityName": previous.friendly_name,
                    "WorkerTimeInPreviousActivity": str(seconds),
                },
            )
        if reject_pending and not workspace.activities[activity_sid].available:
            # Worker update RejectPendingReservations: only with an unavailable activity.
            for reservation in list(workspace.reservations.values()):
                if reservation.worker_sid == worker.sid and reservation.status == "pending":
                    self.reject_reservation(workspace, reservation)
        if rematch:
            self.match(workspace)
