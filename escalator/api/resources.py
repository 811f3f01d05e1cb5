"""The JSON shapes the API answers with (see openapi.yaml)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from escalator.domain.escalation import Escalation, HistoryEntry

__all__ = ["escalation_resource", "timestamp"]


def timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-25T08:43:24.120Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _entry(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "at": timestamp(entry.at),
        "status": entry.status.value,
        "event": entry.event,
        "outcome": entry.outcome.value if entry.outcome else None,
        "worker_sid": entry.worker_sid,
        "reservation_sid": entry.reservation_sid,
        "attempt": entry.attempt.value if entry.attempt else None,
        "twilio_code": entry.twilio_code,
    }


def escalation_resource(escalation: Escalation) -> dict[str, Any]:
    """The escalation as ``GET /escalations/{id}`` shows it."""
    error = escalation.error
    return {
        "id": escalation.id,
        "conversation_id": escalation.conversation_id,
        "reason_code": escalation.reason_code,
        "reason_known": escalation.known_reason,
        "department": escalation.department,
        "priority": escalation.priority,
        "channel": escalation.channel.value,
        "status": escalation.status.value,
        "outcome": escalation.outcome.value if escalation.outcome else None,
        "cancel_requested": escalation.cancel_requested,
        "task_sid": escalation.task_sid,
        "worker": {"sid": escalation.worker_sid, "name": escalation.worker_name}
        if escalation.worker_sid
        else None,
        "error": {"status": error.status, "code": error.code, "message": error.message}
        if error
        else None,
        "summary": escalation.summary,
        "customer": escalation.customer.model_dump(exclude_none=True)
        if escalation.customer
        else None,
        "context": escalation.context,
        "call_sid": escalation.call_sid,
        "status_callback_url": escalation.status_callback_url,
        "created_at": timestamp(escalation.created_at),
        "updated_at": timestamp(escalation.updated_at),
        "history": [_entry(entry) for entry in escalation.history],
    }
