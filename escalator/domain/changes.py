"""Status changes of an escalation, read from its history: what streams and callbacks report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from escalator.domain.escalation import (
    CANCEL_NOT_APPLIED,
    CANCEL_REQUESTED,
    Escalation,
    HistoryEntry,
    Outcome,
    Status,
)
from escalator.domain.events import CANCEL_REASON
from escalator.domain.ids import EscalationId, TaskSid, WorkerSid

__all__ = [
    "StatusChange",
    "callback_body",
    "cancel_for_client",
    "cancel_not_applied",
    "change_body",
    "client_canceled",
    "status_changes",
]


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One change of an escalation's status; ``position`` is its 1-based place in the history."""

    escalation_id: EscalationId
    position: int
    status: Status
    previous: Status | None
    outcome: Outcome | None
    at: datetime
    event: str
    worker_sid: WorkerSid | None
    worker_name: str | None


def _change(escalation: Escalation, position: int, previous: Status | None) -> StatusChange:
    entry: HistoryEntry = escalation.history[position - 1]
    name = (entry.detail or {}).get("worker_name")
    return StatusChange(
        escalation_id=escalation.id,
        position=position,
        status=entry.status,
        previous=previous,
        outcome=entry.outcome if isinstance(entry.outcome, Outcome) else None,
        at=entry.at,
        event=entry.event,
        worker_sid=entry.worker_sid,
        worker_name=name if isinstance(name, str) else None,
    )


def status_changes(escalation: Escalation, *, after: int = 0) -> list[StatusChange]:
    """The status changes at history positions past ``after``, in the order they happened."""
    changes: list[StatusChange] = []
    previous: Status | None = None
    for position, entry in enumerate(escalation.history, start=1):
        if entry.status is not previous and position > after:
            changes.append(_change(escalation, position, previous))
        previous = entry.status
    return changes


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def change_body(escalation: Escalation, change: StatusChange) -> dict[str, Any]:
    """The JSON of a status change, as the stream and the status callback send it."""
    return {
        "escalation_id": escalation.id,
        "conversation_id": escalation.conversation_id,
        "sequence": change.position,
        "status": change.status.value,
        "previous_status": change.previous.value if change.previous else None,
        "outcome": change.outcome.value if change.outcome else None,
        "event": change.event,
        "at": _timestamp(change.at),
        "task_sid": escalation.task_sid,
        "worker": {"sid": change.worker_sid, "name": change.worker_name}
        if change.worker_sid
        else None,
    }


def callback_body(escalation: Escalation, change: StatusChange) -> dict[str, Any]:
    """The body POSTed to the escalation's ``status_callback_url`` for one change."""
    return {
        "delivery_id": f"{escalation.id}.{change.position}",
        "type": "escalation.status_changed",
        **change_body(escalation, change),
    }


def client_canceled(
    escalation: Escalation, *, now: datetime, task_sid: TaskSid | None = None
) -> Escalation:
    """The escalation canceled for its client: its task is canceled, or none exists and none
    will (unchanged when it already ended). ``task_sid`` is the task TaskRouter canceled, when
    the escalation had not adopted it yet."""
    if escalation.status.is_terminal:
        return escalation
    detail: dict[str, Any] = {"reason": CANCEL_REASON}
    adopted = task_sid if escalation.task_sid is None else None
    if adopted is not None:
        detail["task_sid"] = adopted
    entry = HistoryEntry(
        at=now,
        status=Status.CANCELED,
        event="escalation.canceled",
        outcome=Outcome.CANCELED_BY_CLIENT,
        detail=detail,
    )
    return escalation._advance(
        entry, outcome=Outcome.CANCELED_BY_CLIENT, task_sid=escalation.task_sid or adopted
    )


def cancel_for_client(escalation: Escalation, *, now: datetime, task_may_exist: bool) -> Escalation:
    """What a client's cancel does: ``canceled`` at once when no task exists or can exist;
    otherwise a request that TaskRouter's answer settles (it cancels a task only until a worker
    accepts it). Unchanged when the escalation ended, is assigned, or already waits."""
    ended = escalation.status.is_terminal or escalation.status is Status.ASSIGNED
    if ended or escalation.cancel_requested:
        return escalation
    if not task_may_exist:
        return client_canceled(escalation, now=now)
    entry = HistoryEntry(at=now, status=escalation.status, event=CANCEL_REQUESTED)
    return escalation._advance(entry)


def cancel_not_applied(escalation: Escalation, *, now: datetime, why: str) -> Escalation:
    """Record that TaskRouter did not cancel the task (already assigned, or gone): the
    escalation goes on following its task."""
    entry = HistoryEntry(
        at=now, status=escalation.status, event=CANCEL_NOT_APPLIED, detail={"why": why}
    )
    return escalation._advance(entry)
