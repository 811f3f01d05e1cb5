"""Typed identifiers, so that an escalation id is never passed where a task SID is expected."""

from __future__ import annotations

from typing import NewType

__all__ = ["EscalationId", "OutboxId", "ReservationSid", "TaskSid", "WorkerSid"]

EscalationId = NewType("EscalationId", str)
TaskSid = NewType("TaskSid", str)
WorkerSid = NewType("WorkerSid", str)
ReservationSid = NewType("ReservationSid", str)
OutboxId = NewType("OutboxId", int)
