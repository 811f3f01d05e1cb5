"""TaskRouter's own record of a task (Task, Reservations, Events), read back as event facts."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from escalator.domain.events import TaskRouterEvent
from escalator.domain.ids import ReservationSid, TaskSid, WorkerSid
from escalator.taskrouter.webhooks import parse_event

__all__ = [
    "ReservationRecord",
    "TaskRecord",
    "event_of_record",
    "facts_of_task",
]

# A reservation's status, to the events that must have happened for it to be in it.
_RESERVATION_EVENTS: dict[str, tuple[str, ...]] = {
    "pending": (),
    "accepted": ("reservation.accepted",),
    "wrapping": ("reservation.accepted",),
    "completed": ("reservation.accepted", "reservation.completed"),
    "rejected": ("reservation.rejected",),
    "timeout": ("reservation.timeout",),
    "canceled": ("reservation.canceled",),
    "rescinded": ("reservation.rescinded",),
}
# A task's assignment status, to the event that ended it; the others are told by reservations.
_TASK_EVENTS = {"completed": "task.completed", "canceled": "task.canceled"}


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """What a Task fetch shows (only ids, status, reason and time: never its attributes)."""

    sid: TaskSid
    assignment_status: str
    reason: str | None
    date_updated: datetime


@dataclass(frozen=True, slots=True)
class ReservationRecord:
    """What a task's Reservations list shows of one reservation."""

    sid: ReservationSid
    status: str
    worker_sid: WorkerSid | None
    worker_name: str | None
    date_created: datetime
    date_updated: datetime


def _key(event_type: str, task_sid: str, reservation_sid: str | None) -> str:
    """A key that is the same every time the same fact is read back from a live task."""
    text = f"{event_type}|{task_sid}|{reservation_sid or ''}"
    return "rc_" + hashlib.sha256(text.encode()).hexdigest()[:40]


def _fact(
    event_type: str,
    task: TaskRecord,
    at: datetime,
    reservation: ReservationRecord | None = None,
    reason: str | None = None,
) -> TaskRouterEvent:
    return TaskRouterEvent(
        key=_key(event_type, task.sid, reservation.sid if reservation else None),
        event_type=event_type,
        occurred_at=at,
        task_sid=task.sid,
        reservation_sid=reservation.sid if reservation else None,
        worker_sid=reservation.worker_sid if reservation else None,
        worker_name=reservation.worker_name if reservation else None,
        reason=reason,
    )


def facts_of_task(
    task: TaskRecord, reservations: Iterable[ReservationRecord]
) -> list[TaskRouterEvent]:
    """The events a live task and its reservations imply, oldest first."""
    facts: list[TaskRouterEvent] = []
    for reservation in reservations:
        facts.append(_fact("reservation.created", task, reservation.date_created, reservation))
        for event_type in _RESERVATION_EVENTS.get(reservation.status, ()):
            facts.append(_fact(event_type, task, reservation.date_updated, reservation))
    ending = _TASK_EVENTS.get(task.assignment_status)
    if ending is not None:
        facts.append(_fact(ending, task, task.date_updated, reason=task.reason))
    return sorted(facts, key=lambda fact: fact.occurred_at)


def _camel(name: str) -> str:
    """``task_canceled_reason`` -> ``TaskCanceledReason``: the callback field an Events API
    ``event_data`` key stands for."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def event_of_record(
    *,
    sid: str | None,
    event_type: str,
    description: str | None,
    resource_sid: str | None,
    event_date: datetime,
    event_data: Mapping[str, object] | None,
) -> TaskRouterEvent:
    """An Events API record as the fact its callback would have carried, keyed by its Sid."""
    # The Events API names the callback's fields in snake_case under `event_data`, and the
    # common fields (type, description, resource, time) at the top level.
    form = {
        _camel(name): str(value)
        for name, value in (event_data or {}).items()
        if isinstance(value, str | int | float) and not isinstance(value, bool)
    }
    form |= {"EventType": event_type, "Timestamp": event_date.isoformat()}
    if sid:
        form["Sid"] = sid
    if resource_sid:
        form["ResourceSid"] = resource_sid
    if description:
        form["EventDescription"] = description
    return parse_event(form, received_at=event_date)
