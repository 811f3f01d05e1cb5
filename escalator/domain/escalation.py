"""The escalation: its statuses, outcomes, history, and the transitions between them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from escalator.domain.ids import EscalationId, ReservationSid, TaskSid, WorkerSid
from escalator.domain.request import Channel, Customer, EscalationRequest
from escalator.routing import Route

__all__ = [
    "OPEN_STATUSES",
    "Escalation",
    "HistoryEntry",
    "Outcome",
    "ReservationOutcome",
    "Status",
    "TwilioFailure",
    "new_escalation",
    "task_attached",
    "task_refused",
]


class Status(StrEnum):
    """Where an escalation stands (see ARCHITECTURE.md, Escalation lifecycle)."""

    RECEIVED = "received"
    QUEUED = "queued"
    RESERVED = "reserved"
    ASSIGNED = "assigned"
    COMPLETED = "completed"
    CANCELED = "canceled"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """Whether the escalation can no longer change."""
        return self in _TERMINAL


_TERMINAL = frozenset({Status.COMPLETED, Status.CANCELED, Status.FAILED})
OPEN_STATUSES = tuple(status for status in Status if status not in _TERMINAL)


class Outcome(StrEnum):
    """Why a terminal escalation ended: a closed set the AI side can branch on."""

    COMPLETED = "completed"
    CALLER_ABANDONED = "caller_abandoned"
    CANCELED_BY_CLIENT = "canceled_by_client"
    TTL_EXPIRED = "ttl_expired"
    WORKFLOW_TIMEOUT = "workflow_timeout"
    TOO_MANY_REJECTIONS = "too_many_rejections"
    AFTER_HOURS = "after_hours"
    TWILIO_REJECTED = "twilio_rejected"
    TASK_DELETED = "task_deleted"
    CANCELED_OTHER = "canceled_other"


class ReservationOutcome(StrEnum):
    """How one offer of an escalation to a worker ended."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    RESCINDED = "rescinded"
    CANCELED = "canceled"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One fact in an escalation's life, in the order the facts happened."""

    at: datetime
    status: Status
    event: str
    outcome: Outcome | ReservationOutcome | None = None
    worker_sid: WorkerSid | None = None
    reservation_sid: ReservationSid | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TwilioFailure:
    """Why TaskRouter refused an escalation's task."""

    status: int | None
    code: int | None
    message: str


@dataclass(frozen=True, slots=True)
class Escalation:
    """An escalation and everything escalator knows about it."""

    id: EscalationId
    conversation_id: str
    reason_code: str
    known_reason: bool
    department: str
    priority: int
    timeout: int
    skills: tuple[str, ...]
    route_attributes: dict[str, Any]
    channel: Channel
    summary: str
    customer: Customer | None
    context: dict[str, Any]
    call_sid: str | None
    status_callback_url: str | None
    status: Status
    created_at: datetime
    updated_at: datetime
    outcome: Outcome | None = None
    task_sid: TaskSid | None = None
    worker_sid: WorkerSid | None = None
    worker_name: str | None = None
    error: TwilioFailure | None = None
    version: int = 1
    history: tuple[HistoryEntry, ...] = field(default=())

    def _advance(self, entry: HistoryEntry, **changes: Any) -> Escalation:
        return replace(
            self,
            status=entry.status,
            updated_at=entry.at,
            version=self.version + 1,
            history=(*self.history, entry),
            **changes,
        )


def new_escalation(
    request: EscalationRequest, route: Route, *, escalation_id: EscalationId, now: datetime
) -> Escalation:
    """A freshly received escalation, routed by its reason code."""
    return Escalation(
        id=escalation_id,
        conversation_id=request.conversation_id,
        reason_code=request.reason_code,
        known_reason=route.known_reason,
        department=route.department,
        priority=route.priority,
        timeout=route.timeout,
        skills=route.skills,
        route_attributes=route.attributes,
        channel=request.channel,
        summary=request.summary,
        customer=request.customer,
        context=dict(request.context),
        call_sid=request.call_sid,
        status_callback_url=request.status_callback_url,
        status=Status.RECEIVED,
        created_at=now,
        updated_at=now,
        history=(HistoryEntry(at=now, status=Status.RECEIVED, event="escalation.received"),),
    )


def task_attached(
    escalation: Escalation, task_sid: TaskSid, *, now: datetime, adopted: bool = False
) -> Escalation:
    """The escalation's task exists in TaskRouter: created by us, or found and adopted."""
    if escalation.task_sid is not None or escalation.status is not Status.RECEIVED:
        return escalation
    event = "task.adopted" if adopted else "task.created"
    entry = HistoryEntry(at=now, status=Status.QUEUED, event=event, detail={"task_sid": task_sid})
    return escalation._advance(entry, task_sid=task_sid)


def task_refused(escalation: Escalation, failure: TwilioFailure, *, now: datetime) -> Escalation:
    """TaskRouter refused the task for good: the escalation fails with ``twilio_rejected``."""
    if escalation.status.is_terminal or escalation.task_sid is not None:
        return escalation
    entry = HistoryEntry(
        at=now,
        status=Status.FAILED,
        event="task.rejected",
        outcome=Outcome.TWILIO_REJECTED,
        detail={"status": failure.status, "code": failure.code},
    )
    return escalation._advance(entry, outcome=Outcome.TWILIO_REJECTED, error=failure)
