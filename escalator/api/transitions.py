"""Metrics of an escalation's transitions, counted where the API applied them."""

from __future__ import annotations

from datetime import datetime

from escalator.domain.escalation import Escalation, ReservationOutcome, Status
from escalator.metrics import Metrics

__all__ = ["record_transition"]


def record_transition(
    metrics: Metrics, before: Escalation, after: Escalation, now: datetime
) -> None:
    """Count what changed from ``before`` to ``after``: outcomes, reservations, assignment."""
    if after.status.is_terminal and not before.status.is_terminal and after.outcome is not None:
        metrics.finished(outcome=after.outcome.value, reason=after.metric_reason)
    for entry in after.history[len(before.history) :]:
        if isinstance(entry.outcome, ReservationOutcome):
            metrics.reservations.labels(outcome=entry.outcome.value).inc()
    if after.status is Status.ASSIGNED and not any(
        entry.status is Status.ASSIGNED for entry in before.history
    ):
        metrics.time_to_assignment.observe((now - after.created_at).total_seconds())
