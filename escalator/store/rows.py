"""Conversion between escalations and table rows, and the plan that reads escalations whole."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy import RowMapping

from escalator.domain.escalation import (
    AttemptOutcome,
    Escalation,
    HistoryEntry,
    Outcome,
    ReservationOutcome,
    Status,
    TwilioFailure,
)
from escalator.domain.ids import EscalationId, ReservationSid, TaskSid, WorkerSid
from escalator.domain.request import Channel, Customer
from escalator.store.plans import Plan, Step
from escalator.store.schema import escalations, history

__all__ = [
    "escalation_from_rows",
    "escalation_values",
    "escalations_by_id",
    "history_values",
    "state_values",
]

_BY_ID = sa.select(escalations).where(escalations.c.id.in_(sa.bindparam("ids", expanding=True)))
_HISTORY = (
    sa.select(history)
    .where(history.c.escalation_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(history.c.id)
)


def escalations_by_id(ids: Sequence[str]) -> Plan[dict[str, Escalation]]:
    """The escalations with these ids, each with its history (two statements for all)."""
    if not ids:
        return {}
    rows = yield Step(_BY_ID, {"ids": list(ids)}, reads=True)
    entries: dict[str, list[Any]] = {row["id"]: [] for row in rows}
    for entry in (yield Step(_HISTORY, {"ids": list(entries)}, reads=True)):
        entries[entry["escalation_id"]].append(entry)
    return {row["id"]: escalation_from_rows(row, entries[row["id"]]) for row in rows}


def escalation_values(escalation: Escalation) -> dict[str, Any]:
    """The ``escalations`` row of an escalation."""
    return {
        "id": escalation.id,
        "conversation_id": escalation.conversation_id,
        "reason_code": escalation.reason_code,
        "known_reason": escalation.known_reason,
        "department": escalation.department,
        "priority": escalation.priority,
        "timeout": escalation.timeout,
        "skills": list(escalation.skills),
        "route_attributes": escalation.route_attributes,
        "channel": escalation.channel.value,
        "summary": escalation.summary,
        "customer": escalation.customer.model_dump(exclude_none=True)
        if escalation.customer
        else None,
        "context": escalation.context,
        "call_sid": escalation.call_sid,
        "status_callback_url": escalation.status_callback_url,
        "created_at": escalation.created_at,
        **state_values(escalation),
    }


def state_values(escalation: Escalation) -> dict[str, Any]:
    """The columns of an escalation's row that change after it is created: its state."""
    return {
        "status": escalation.status.value,
        "outcome": escalation.outcome.value if escalation.outcome else None,
        "task_sid": escalation.task_sid,
        "worker_sid": escalation.worker_sid,
        "worker_name": escalation.worker_name,
        "error": asdict(escalation.error) if escalation.error else None,
        "version": escalation.version,
        "updated_at": escalation.updated_at,
    }


def history_values(
    escalation_id: EscalationId, entries: Iterable[HistoryEntry]
) -> list[dict[str, Any]]:
    """The ``escalation_history`` rows of some history entries."""
    return [
        {
            "escalation_id": escalation_id,
            "at": entry.at,
            "status": entry.status.value,
            "event": entry.event,
            "outcome": entry.outcome.value if entry.outcome else None,
            "worker_sid": entry.worker_sid,
            "reservation_sid": entry.reservation_sid,
            "detail": _detail(entry),
        }
        for entry in entries
    ]


# An attempt's outcome and Twilio code are kept in the history row's JSON `detail` under these
# keys: no column of their own, so no migration (and no clash with a concurrent one).
_ATTEMPT = "attempt"
_TWILIO_CODE = "twilio_code"


def _detail(entry: HistoryEntry) -> dict[str, Any] | None:
    if entry.attempt is None and entry.twilio_code is None:
        return entry.detail
    detail = dict(entry.detail or {})
    if entry.attempt is not None:
        detail[_ATTEMPT] = entry.attempt.value
    if entry.twilio_code is not None:
        detail[_TWILIO_CODE] = entry.twilio_code
    return detail


_OUTCOMES = {outcome.value for outcome in Outcome}


def _outcome(value: str | None) -> Outcome | ReservationOutcome | None:
    """An escalation's outcome or, on a reservation's history entry, the reservation's."""
    if not value:
        return None
    return Outcome(value) if value in _OUTCOMES else ReservationOutcome(value)


def _entry(row: RowMapping) -> HistoryEntry:
    detail = row["detail"]
    attempt = code = None
    if isinstance(detail, dict) and (_ATTEMPT in detail or _TWILIO_CODE in detail):
        detail = dict(detail)
        attempt = detail.pop(_ATTEMPT, None)
        code = detail.pop(_TWILIO_CODE, None)
        detail = detail or None
    return HistoryEntry(
        at=row["at"],
        status=Status(row["status"]),
        event=row["event"],
        outcome=_outcome(row["outcome"]),
        worker_sid=WorkerSid(row["worker_sid"]) if row["worker_sid"] else None,
        reservation_sid=ReservationSid(row["reservation_sid"]) if row["reservation_sid"] else None,
        detail=detail,
        attempt=AttemptOutcome(attempt) if attempt else None,
        twilio_code=code if isinstance(code, int) else None,
    )


def escalation_from_rows(row: RowMapping, history_rows: Sequence[RowMapping]) -> Escalation:
    """An escalation from its row and its history rows (in insertion order)."""
    error = row["error"]
    return Escalation(
        id=EscalationId(row["id"]),
        conversation_id=row["conversation_id"],
        reason_code=row["reason_code"],
        known_reason=row["known_reason"],
        department=row["department"],
        priority=row["priority"],
        timeout=row["timeout"],
        skills=tuple(row["skills"]),
        route_attributes=row["route_attributes"],
        channel=Channel(row["channel"]),
        summary=row["summary"],
        customer=Customer.model_validate(row["customer"]) if row["customer"] else None,
        context=row["context"],
        call_sid=row["call_sid"],
        status_callback_url=row["status_callback_url"],
        status=Status(row["status"]),
        outcome=Outcome(row["outcome"]) if row["outcome"] else None,
        task_sid=TaskSid(row["task_sid"]) if row["task_sid"] else None,
        worker_sid=WorkerSid(row["worker_sid"]) if row["worker_sid"] else None,
        worker_name=row["worker_name"],
        error=TwilioFailure(**error) if error else None,
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        history=tuple(_entry(history_row) for history_row in history_rows),
    )
