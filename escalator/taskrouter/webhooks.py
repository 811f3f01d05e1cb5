"""TaskRouter's webhooks on the wire: signatures, event callback fields, assignment instructions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from twilio.request_validator import RequestValidator, compare

from escalator.domain.events import TaskRouterEvent, fingerprint
from escalator.domain.ids import EscalationId, ReservationSid, TaskSid, WorkerSid
from escalator.errors import EscalatorError
from escalator.routing import ChannelAssignment

__all__ = [
    "AssignmentInstruction",
    "MalformedCallback",
    "assignment_channel",
    "assignment_instruction",
    "parse_event",
    "signature_is_valid",
]


class MalformedCallback(EscalatorError):
    """The callback lacks the fields every TaskRouter event carries."""


def signature_is_valid(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    """Whether ``X-Twilio-Signature`` signs ``url`` and ``params`` with ``auth_token``.

    ``params`` should be the request's multidict: the SDK reads repeated fields with
    ``getall`` (with a plain dict it raises and catches two exceptions per field).
    """
    if not signature:
        return False
    validator = RequestValidator(auth_token)
    # The URL exactly as configured is what TaskRouter signs: one HMAC. ``validate`` computes
    # two (with and without the default port, as Twilio's signing of ports varies), so it is
    # the fallback rather than the first try.
    if compare(validator.compute_signature(url, params), signature):
        return True
    return bool(validator.validate(url, params, signature))


def _timestamp(value: str | None, received_at: datetime) -> datetime:
    """``Timestamp``: its format is not documented, so epoch seconds or ISO 8601."""
    if not value:
        return received_at
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return received_at
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _attributes(form: Mapping[str, str]) -> dict[str, object]:
    try:
        decoded = json.loads(form.get("TaskAttributes") or "{}")
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _reason(event_type: str, form: Mapping[str, str]) -> str | None:
    if event_type == "task.canceled":
        return form.get("TaskCanceledReason") or form.get("EventDescription") or None
    if event_type == "task.completed":
        return form.get("TaskCompletedReason") or None
    return None


def parse_event(form: Mapping[str, str], *, received_at: datetime) -> TaskRouterEvent:
    """The event an event callback carries; only ids, type, time and reason are kept.

    ``TaskAttributes`` and ``WorkerAttributes`` hold the customer's summary and contact
    details: they are read for ``escalation_id`` and dropped.
    """
    event_type = (form.get("EventType") or "").strip()
    if not event_type:
        raise MalformedCallback("the callback has no EventType")
    task_sid = form.get("TaskSid") or None
    reservation_sid = form.get("ReservationSid") or None
    stamp = form.get("Timestamp") or None
    # TaskRouter's callbacks carry no event Sid (it is on the Events API resource only).
    key = form.get("Sid") or fingerprint(
        event_type, form.get("ResourceSid"), reservation_sid, task_sid, stamp
    )
    escalation_id = _attributes(form).get("escalation_id")
    worker_sid = form.get("WorkerSid") or None
    return TaskRouterEvent(
        key=key,
        event_type=event_type,
        occurred_at=_timestamp(stamp, received_at),
        task_sid=TaskSid(task_sid) if task_sid else None,
        escalation_id=EscalationId(escalation_id) if isinstance(escalation_id, str) else None,
        reservation_sid=ReservationSid(reservation_sid) if reservation_sid else None,
        worker_sid=WorkerSid(worker_sid) if worker_sid else None,
        worker_name=(form.get("WorkerName") or None) if worker_sid else None,
        reason=_reason(event_type, form),
    )


def assignment_channel(form: Mapping[str, str]) -> str | None:
    """The channel of the task offered: the ``channel`` attribute escalator writes, else
    the ``TaskChannelUniqueName`` parameter."""
    channel = _attributes(form).get("channel")
    if isinstance(channel, str) and channel:
        return channel
    return form.get("TaskChannelUniqueName") or None


class AssignmentInstruction(BaseModel):
    """The JSON an assignment callback answers (TaskRouter's assignment instructions)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    instruction: Literal["accept", "dequeue"]
    caller_id: str | None = Field(default=None, serialization_alias="from")
    post_work_activity_sid: str | None = None

    def body(self) -> dict[str, str]:
        """The answer's JSON object, without unset parameters."""
        return self.model_dump(by_alias=True, exclude_none=True)


def assignment_instruction(spec: ChannelAssignment) -> AssignmentInstruction:
    """The instruction the routing file gives for a channel."""
    if spec.instruction == "accept":
        return AssignmentInstruction(instruction="accept")
    return AssignmentInstruction(
        instruction="dequeue",
        caller_id=spec.caller_id,
        post_work_activity_sid=spec.post_work_activity_sid,
    )
