"""The escalation: its statuses, outcomes, history, and the transitions between them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from escalator.domain.ids import EscalationId, ReservationSid, TaskSid, WorkerSid
from escalator.domain.request import Channel, Customer, EscalationRequest
from escalator.routing import Route

__all__ = [
    "ATTEMPT_EVENTS",
    "CANCEL_NOT_APPLIED",
    "CANCEL_REQUESTED",
    "OPEN_STATUSES",
    "RECORDED_RUN",
    "Attempt",
    "AttemptKind",
    "AttemptOutcome",
    "Escalation",
    "HistoryEntry",
    "Outcome",
    "ReservationOutcome",
    "Status",
    "TwilioFailure",
    "attempts_recorded",
    "new_escalation",
    "task_after_end",
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


class AttemptOutcome(StrEnum):
    """What one call to TaskRouter for an escalation's task (a lookup or a create) came to."""

    CREATED = "created"
    FOUND = "found"
    NOT_FOUND = "not_found"
    TRANSIENT_ERROR = "transient_error"
    REJECTED = "rejected"


class AttemptKind(StrEnum):
    """Which call to TaskRouter an attempt was; the value is its history event."""

    LOOKUP = "task.lookup"
    CREATE = "task.create_attempt"


# A client's cancel waiting for TaskRouter to cancel the task, and TaskRouter's refusal (a
# worker accepted first, or the task had ended), which ends the wait.
CANCEL_REQUESTED = "escalation.cancel_requested"
CANCEL_NOT_APPLIED = "task.cancel_not_applied"

# The history events of attempts that settled nothing (the escalation is still waiting for its
# task); the attempts that settle something are told by `task.created`, `task.adopted`,
# `task.rejected` and `task.after_end`.
ATTEMPT_EVENTS = frozenset(kind.value for kind in AttemptKind)
# How many unsettled attempts in a row the history keeps in full; past that, one lease in
# _SAMPLE_EVERY is kept, so that a day-long TaskRouter outage cannot grow a history without end.
RECORDED_RUN = 20
_SAMPLE_EVERY = 10


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One fact in an escalation's life, in the order the facts happened.

    ``attempt`` and ``twilio_code`` are set on the entries that record a call to TaskRouter
    for the escalation's task: what it came to, and Twilio's error code when it failed.
    """

    at: datetime
    status: Status
    event: str
    outcome: Outcome | ReservationOutcome | None = None
    worker_sid: WorkerSid | None = None
    reservation_sid: ReservationSid | None = None
    detail: dict[str, Any] | None = None
    attempt: AttemptOutcome | None = None
    twilio_code: int | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One lookup or create of an escalation's task that settled nothing, as it is recorded."""

    at: datetime
    kind: AttemptKind
    outcome: AttemptOutcome
    twilio_code: int | None = None
    http_status: int | None = None


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

    @property
    def metric_reason(self) -> str:
        """The reason code as metrics label it: "unknown" for codes the routing file does not
        list, so that callers cannot grow a label without bound."""
        return self.reason_code if self.known_reason else "unknown"

    @property
    def cancel_requested(self) -> bool:
        """Whether the client asked to cancel and TaskRouter has not answered yet: the
        escalation ends (``canceled``) only once its task is canceled, or proven not to exist."""
        if self.status.is_terminal:
            return False
        for entry in reversed(self.history):
            if entry.event == CANCEL_REQUESTED:
                return True
            if entry.event == CANCEL_NOT_APPLIED:
                return False
        return False

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


def attempts_recorded(
    escalation: Escalation, attempts: Sequence[Attempt], *, retry: int
) -> Escalation:
    """The escalation with unsettled attempts in its history (its status unchanged).

    ``retry`` is how many times the outbox row was given back before this lease. Once the
    history ends with ``RECORDED_RUN`` unsettled attempts, only the last attempt of every
    tenth lease is kept (with its ``retry`` in ``detail``); metrics and logs count them all.
    """
    run = 0
    for entry in reversed(escalation.history):
        if entry.event not in ATTEMPT_EVENTS:
            break
        run += 1
    kept = list(attempts[: max(0, RECORDED_RUN - run)])
    sampled = len(kept) < len(attempts) and retry % _SAMPLE_EVERY == 0
    if sampled:
        kept.append(attempts[-1])
    for number, attempt in enumerate(kept, start=1):
        detail: dict[str, Any] = {}
        if attempt.http_status is not None:
            detail["status"] = attempt.http_status
        if sampled and number == len(kept):
            detail["retry"] = retry
        entry = HistoryEntry(
            at=attempt.at,
            status=escalation.status,
            event=attempt.kind.value,
            detail=detail or None,
            attempt=attempt.outcome,
            twilio_code=attempt.twilio_code,
        )
        escalation = escalation._advance(entry)
    return escalation


def task_attached(
    escalation: Escalation, task_sid: TaskSid, *, now: datetime, adopted: bool = False
) -> Escalation:
    """The escalation's task exists in TaskRouter: created by us, or found and adopted."""
    if escalation.task_sid is not None or escalation.status is not Status.RECEIVED:
        return escalation
    event = "task.adopted" if adopted else "task.created"
    entry = HistoryEntry(
        at=now,
        status=Status.QUEUED,
        event=event,
        detail={"task_sid": task_sid},
        attempt=AttemptOutcome.FOUND if adopted else AttemptOutcome.CREATED,
    )
    return escalation._advance(entry, task_sid=task_sid)


def task_after_end(
    escalation: Escalation, task_sid: TaskSid, *, now: datetime, adopted: bool
) -> Escalation:
    """A task was created or found for an escalation that had ended meanwhile: recorded, and
    not adopted (the dispatcher cancels it)."""
    if not escalation.status.is_terminal or escalation.task_sid is not None:
        return escalation
    entry = HistoryEntry(
        at=now,
        status=escalation.status,
        event="task.after_end",
        detail={"task_sid": task_sid},
        attempt=AttemptOutcome.FOUND if adopted else AttemptOutcome.CREATED,
    )
    return escalation._advance(entry)


def task_refused(escalation: Escalation, failure: TwilioFailure, *, now: datetime) -> Escalation:
    """TaskRouter refused the task for good: the escalation fails with ``twilio_rejected``."""
    if escalation.status.is_terminal or escalation.task_sid is not None:
        return escalation
    entry = HistoryEntry(
        at=now,
        status=Status.FAILED,
        event="task.rejected",
        outcome=Outcome.TWILIO_REJECTED,
        detail={"status": failure.status},
        attempt=AttemptOutcome.REJECTED,
        twilio_code=failure.code,
    )
    return escalation._advance(entry, outcome=Outcome.TWILIO_REJECTED, error=failure)
