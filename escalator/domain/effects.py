"""Which TaskRouter events change an escalation, and the side effects an event owes TaskRouter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from escalator.domain.escalation import Escalation
from escalator.domain.events import RESERVATION_OUTCOMES, TaskRouterEvent
from escalator.domain.ids import ReservationSid, WorkerSid
from escalator.routing import CascadeSpec

__all__ = ["APPLIED_EVENTS", "KNOWN_EVENTS", "WorkerReset", "applies", "side_effects"]

# Event types that change an escalation's status or history.
APPLIED_EVENTS = frozenset(
    {
        *RESERVATION_OUTCOMES,
        "reservation.created",
        "reservation.completed",
        "reservation.wrapup",
        "task.canceled",
        "task.completed",
        "task.deleted",
        "task.system-deleted",
        "workflow.timeout",
    }
)
# Event types escalator knows; the ones not applied are acknowledged and ignored.
KNOWN_EVENTS = APPLIED_EVENTS | {
    "task.created",
    "task.wrapup",
    "task-queue.entered",
    "task-queue.moved",
}


def applies(escalation: Escalation, event: TaskRouterEvent) -> bool:
    """Whether ``event`` changes ``escalation`` (``task.created`` only when it adopts the task)."""
    if event.event_type == "task.created":
        return escalation.task_sid is None and event.task_sid is not None
    return event.event_type in APPLIED_EVENTS


@dataclass(frozen=True, slots=True)
class WorkerReset:
    """Put a worker whose reservation timed out back into an available activity."""

    worker_sid: WorkerSid
    activity: str
    reservation_sid: ReservationSid | None

    def payload(self) -> dict[str, Any]:
        """The JSON the outbox row carries."""
        return {
            "worker_sid": self.worker_sid,
            "activity": self.activity,
            "reservation_sid": self.reservation_sid,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> WorkerReset:
        """The reset an outbox row carries."""
        reservation = payload.get("reservation_sid")
        return cls(
            worker_sid=WorkerSid(str(payload["worker_sid"])),
            activity=str(payload["activity"]),
            reservation_sid=ReservationSid(reservation) if reservation else None,
        )


def _timed_out_before(escalation: Escalation, reservation_sid: str | None) -> bool:
    return any(
        entry.event == "reservation.timeout" and entry.reservation_sid == reservation_sid
        for entry in escalation.history
    )


def side_effects(
    before: Escalation, after: Escalation, event: TaskRouterEvent, cascade: CascadeSpec
) -> tuple[WorkerReset, ...]:
    """What TaskRouter must be told because ``event`` turned ``before`` into ``after``."""
    if (
        event.event_type == "reservation.timeout"
        and cascade.reset
        and event.worker_sid is not None
        and after is not before
        # Once per reservation, even if the same fact reaches us again under another key.
        and not _timed_out_before(before, event.reservation_sid)
    ):
        return (WorkerReset(event.worker_sid, cascade.activity, event.reservation_sid),)
    return ()
