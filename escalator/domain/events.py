"""TaskRouter events as escalator reads them, and what each one does to an escalation.

The state of an escalation is derived from the *set* of facts it has seen, not from their
order: TaskRouter documents no ordering for its callbacks, and callbacks can be duplicated,
delayed or lost (then the reconciler supplies the facts). So a reservation that has ended is
never reopened by a late ``reservation.created``, and a terminal escalation never changes, but
for one case: a task's deletion, which a late completion or cancel may still explain.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from escalator.domain.escalation import (
    Escalation,
    HistoryEntry,
    Outcome,
    ReservationOutcome,
    Status,
)
from escalator.domain.ids import EscalationId, ReservationSid, TaskSid, WorkerSid

__all__ = [
    "CANCEL_REASON",
    "RESERVATION_OUTCOMES",
    "TaskRouterEvent",
    "apply_event",
    "cancel_outcome",
    "fingerprint",
]

# The Reason escalator sends when it cancels a task for its client (POST .../cancel).
CANCEL_REASON = "escalator: canceled by client"


# TaskRouter's reservation event types and the reservation outcome each one records.
RESERVATION_OUTCOMES: dict[str, ReservationOutcome] = {
    "reservation.accepted": ReservationOutcome.ACCEPTED,
    "reservation.rejected": ReservationOutcome.REJECTED,
    "reservation.timeout": ReservationOutcome.TIMED_OUT,
    "reservation.rescinded": ReservationOutcome.RESCINDED,
    "reservation.canceled": ReservationOutcome.CANCELED,
}
_ENDING = frozenset({*RESERVATION_OUTCOMES, "reservation.completed", "reservation.wrapup"}) - {
    "reservation.accepted"
}

# Why TaskRouter canceled a task (TaskCanceledReason / the task's Reason), to our outcome.
# "Task TTL Exceeded" is documented on the Task resource; the others are matched loosely
# because their wording is not documented.
_CANCEL_REASONS: tuple[tuple[str, Outcome], ...] = (
    (CANCEL_REASON, Outcome.CANCELED_BY_CLIENT),
    ("task ttl exceeded", Outcome.TTL_EXPIRED),
    ("workflow timeout", Outcome.WORKFLOW_TIMEOUT),
    ("workflow.timeout", Outcome.WORKFLOW_TIMEOUT),
    ("reservations", Outcome.TOO_MANY_REJECTIONS),
    ("hangup", Outcome.CALLER_ABANDONED),
    ("hung up", Outcome.CALLER_ABANDONED),
)


def cancel_outcome(reason: str | None) -> Outcome:
    """The outcome of a task canceled for ``reason``."""
    text = (reason or "").strip().lower()
    for marker, outcome in _CANCEL_REASONS:
        if marker.lower() in text:
            return outcome
    return Outcome.CANCELED_OTHER


@dataclass(frozen=True, slots=True)
class TaskRouterEvent:
    """One TaskRouter fact about a task of ours, whichever way it reached us."""

    key: str
    event_type: str
    occurred_at: datetime
    task_sid: TaskSid | None = None
    escalation_id: EscalationId | None = None
    reservation_sid: ReservationSid | None = None
    worker_sid: WorkerSid | None = None
    worker_name: str | None = None
    reason: str | None = None


def fingerprint(
    event_type: str,
    resource_sid: str | None,
    reservation_sid: str | None,
    task_sid: str | None,
    timestamp: str | None,
) -> str:
    """A stable key for an event that carries no ``Sid`` (TaskRouter's callbacks do not)."""
    text = "|".join(
        part or "" for part in (event_type, resource_sid, reservation_sid, task_sid, timestamp)
    )
    return "fp_" + hashlib.sha256(text.encode()).hexdigest()[:40]


# Facts that happen at most once per task, or once per reservation: the same fact can reach us
# under two keys (a callback fingerprint, and the Events API's Sid through the reconciler).
_ONCE = frozenset(
    {
        "task.created",
        "task.completed",
        "task.canceled",
        "task.deleted",
        "task.system-deleted",
        "task.wrapup",
        "workflow.timeout",
        "reservation.created",
        "reservation.completed",
        "reservation.wrapup",
        *RESERVATION_OUTCOMES,
    }
)


def _seen(escalation: Escalation, event: TaskRouterEvent) -> bool:
    for entry in escalation.history:
        if (entry.detail or {}).get("event_key") == event.key:
            return True
        if (
            event.event_type in _ONCE
            and entry.event == event.event_type
            and entry.reservation_sid == event.reservation_sid
        ):
            return True
    return False


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the history says about the escalation's reservations."""

    created: dict[str, WorkerSid | None]
    accepted: dict[str, tuple[WorkerSid | None, str | None]]
    ended: set[str]


def _facts(history: tuple[HistoryEntry, ...]) -> _Facts:
    facts = _Facts(created={}, accepted={}, ended=set())
    for entry in history:
        event, reservation = entry.event, entry.reservation_sid
        if not reservation:
            continue
        if event == "reservation.created":
            facts.created[reservation] = entry.worker_sid
        elif event == "reservation.accepted":
            name = (entry.detail or {}).get("worker_name")
            facts.accepted[reservation] = (
                entry.worker_sid,
                name if isinstance(name, str) else None,
            )
        elif event in _ENDING:
            facts.ended.add(reservation)
    return facts


# Twilio deletes every ended task about 5 minutes after it ended, so a deletion says less than
# the completion or cancel it may overtake: those replace a `task_deleted` outcome.
_FINAL = frozenset({"task.completed", "task.canceled", "workflow.timeout"})


def _terminal_of(event: TaskRouterEvent) -> tuple[Status, Outcome] | None:
    if event.event_type == "task.completed":
        return Status.COMPLETED, Outcome.COMPLETED
    if event.event_type == "task.canceled":
        return Status.CANCELED, cancel_outcome(event.reason)
    if event.event_type == "workflow.timeout":
        return Status.CANCELED, Outcome.WORKFLOW_TIMEOUT
    if event.event_type in ("task.deleted", "task.system-deleted"):
        return Status.CANCELED, Outcome.TASK_DELETED
    return None


def apply_event(escalation: Escalation, event: TaskRouterEvent) -> Escalation:
    """The escalation after ``event``: its history gains the fact, its status is re-derived."""
    if _seen(escalation, event):
        return escalation
    if escalation.task_sid is not None and event.task_sid not in (None, escalation.task_sid):
        return escalation  # another task (a duplicate we did not adopt): not our fact
    finished = escalation.status.is_terminal
    # A finished escalation adopts no task: a task that appears after the end is not its own.
    task_sid = escalation.task_sid or (None if finished else event.task_sid)
    reservation_outcome = RESERVATION_OUTCOMES.get(event.event_type)
    detail: dict[str, object] = {"event_key": event.key}
    if event.worker_name:
        detail["worker_name"] = event.worker_name
    if event.reason:
        detail["reason"] = event.reason[:200]
    if task_sid and escalation.task_sid is None:
        detail["task_sid"] = task_sid
    terminal = _terminal_of(event)
    if finished and not (escalation.outcome is Outcome.TASK_DELETED and event.event_type in _FINAL):
        terminal = None
    history = escalation.history
    probe = HistoryEntry(
        at=event.occurred_at,
        status=escalation.status,
        event=event.event_type,
        outcome=terminal[1] if terminal else reservation_outcome,
        worker_sid=event.worker_sid,
        reservation_sid=event.reservation_sid,
        detail=detail,
    )
    facts = _facts((*history, probe))
    status, outcome, worker_sid, worker_name = _derive(escalation, facts, task_sid, terminal)
    entry = HistoryEntry(
        at=probe.at,
        status=status,
        event=probe.event,
        outcome=probe.outcome,
        worker_sid=probe.worker_sid,
        reservation_sid=probe.reservation_sid,
        detail=detail,
    )
    return escalation._advance(
        entry,
        task_sid=task_sid,
        outcome=outcome,
        worker_sid=worker_sid,
        worker_name=worker_name,
    )


def _derive(
    escalation: Escalation,
    facts: _Facts,
    task_sid: TaskSid | None,
    terminal: tuple[Status, Outcome] | None,
) -> tuple[Status, Outcome | None, WorkerSid | None, str | None]:
    # An accepted reservation holds the escalation until the task itself ends.
    holding = list(facts.accepted)
    worker_sid, worker_name = (
        facts.accepted[holding[-1]] if holding else (escalation.worker_sid, escalation.worker_name)
    )
    if terminal is not None:
        return terminal[0], terminal[1], worker_sid, worker_name
    if escalation.status.is_terminal:
        # Status and outcome are final; a late acceptance still says who had the task.
        return escalation.status, escalation.outcome, worker_sid, worker_name
    if holding:
        return Status.ASSIGNED, None, worker_sid, worker_name
    pending = [sid for sid in facts.created if sid not in facts.ended]
    if pending:
        return Status.RESERVED, None, escalation.worker_sid, escalation.worker_name
    if task_sid is not None:
        return Status.QUEUED, None, escalation.worker_sid, escalation.worker_name
    return Status.RECEIVED, None, None, None
