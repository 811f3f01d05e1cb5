"""Prometheus metrics, in a registry of their own per service instance (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    """Every metric escalator exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.escalations_received = Counter(
            "escalator_escalations_received",
            "Escalations acknowledged, by whether they were new.",
            ["result"],
            registry=self.registry,
        )
        self.tasks_created = Counter(
            "escalator_tasks_created",
            "TaskRouter tasks created or adopted for escalations.",
            ["how"],
            registry=self.registry,
        )
        self.task_create_failures = Counter(
            "escalator_task_create_failures",
            "Failed attempts to create a task, by kind and Twilio code.",
            ["kind", "code"],
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "escalator_outbox_backlog",
            "Side effects acknowledged but not yet carried out.",
            registry=self.registry,
        )
        self.time_to_task = Histogram(
            "escalator_time_to_task_seconds",
            "From acknowledgement to the task existing in TaskRouter.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.dispatcher_errors = Counter(
            "escalator_dispatcher_errors",
            "Unexpected errors in the dispatcher (each one logged with its traceback).",
            registry=self.registry,
        )
        self.events_received = Counter(
            "escalator_taskrouter_events",
            "TaskRouter event callbacks, by event type and what became of them.",
            ["type", "result"],
            registry=self.registry,
        )
        self.signature_failures = Counter(
            "escalator_signature_failures",
            "Webhook requests refused for a missing or wrong X-Twilio-Signature.",
            ["endpoint"],
            registry=self.registry,
        )
        self.assignment_instructions = Counter(
            "escalator_assignment_instructions",
            "Assignment callbacks answered, by channel and instruction.",
            ["channel", "instruction"],
            registry=self.registry,
        )
        self.worker_resets = Counter(
            "escalator_worker_resets",
            "Workers put back after a reservation timeout (done) or left alone (skipped, refused).",
            ["result"],
            registry=self.registry,
        )
        self.escalations_finished = Counter(
            "escalator_escalations_finished",
            "Escalations that reached a terminal status, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.store_unavailable = Counter(
            "escalator_store_unavailable",
            "Requests or loop turns that found the database unavailable.",
            ["where"],
            registry=self.registry,
        )
        self.timeouts_swept = Counter(
            "escalator_reconciler_timeouts_swept",
            "Reservation timeouts the reconciler's sweep of recent events found and escalator "
            "had not heard of (their callbacks were lost).",
            registry=self.registry,
        )
        self.reconciled = Counter(
            "escalator_reconciled_escalations",
            "Stale escalations re-read from TaskRouter, by whether that changed them.",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "escalator_reconcile_errors",
            "Failed re-reads of stale escalations, by kind (throttled, transient, refused, ...).",
            ["kind"],
            registry=self.registry,
        )
        self.outcomes_by_reason = Counter(
            "escalator_escalation_outcomes",
            "Escalations that reached a terminal status, by reason code (unknown codes as "
            "'unknown') and outcome.",
            ["reason", "outcome"],
            registry=self.registry,
        )
        self.time_to_assignment = Histogram(
            "escalator_time_to_assignment_seconds",
            "From acknowledgement to a worker accepting the escalation's task.",
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=self.registry,
        )
        self.reservations = Counter(
            "escalator_reservations",
            "Reservations (offers to a worker) that ended, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.status_callbacks = Counter(
            "escalator_status_callbacks",
            "Status callback deliveries: sent, failed (retried), abandoned, refused (bad URL).",
            ["result"],
            registry=self.registry,
        )
        self.outbox_backlog_by_kind = Gauge(
            "escalator_outbox_backlog_by_kind",
            "Side effects acknowledged but not yet carried out, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.task_cancels = Counter(
            "escalator_task_cancels",
            "Client cancels carried to TaskRouter: done, not_applied (assigned or gone), none.",
            ["result"],
            registry=self.registry,
        )
        self.idempotency = Counter(
            "escalator_idempotency",
            "POST /escalations with an Idempotency-Key: new, replayed, conflict (the first "
            "request still in flight), mismatch (reused with another body).",
            ["result"],
            registry=self.registry,
        )
        self.streams_open = Gauge(
            "escalator_streams_open",
            "Server-sent event streams open now.",
            registry=self.registry,
        )
        self.task_lookups = Counter(
            "escalator_task_lookups",
            "Escalations looked up in TaskRouter by escalation id (find before create), by "
            "result: found, not_found, multiple (more than one task), transient_error, "
            "deferred (no rate-limit turn in time), rejected.",
            ["result"],
            registry=self.registry,
        )
        self.task_lookup_requests = Counter(
            "escalator_task_lookup_requests",
            "EvaluateTaskAttributes requests sent (pages included), by result: ok, throttled "
            "(429), failed, rejected.",
            ["result"],
            registry=self.registry,
        )
        self.task_lookup_batch_size = Histogram(
            "escalator_task_lookup_batch_size",
            "Escalation ids looked up together in one batch.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=self.registry,
        )
        self.task_lookup_rate_limit_waits = Histogram(
            "escalator_task_lookup_rate_limit_wait_seconds",
            "Waits for a turn of the lookup rate limit (only the lookups that had to wait).",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.duplicate_tasks = Counter(
            "escalator_duplicate_tasks",
            "Tasks found beyond the first for one escalation (should never happen; the oldest "
            "is adopted and none is deleted).",
            registry=self.registry,
        )
        self.task_create_attempts = Counter(
            "escalator_task_create_attempts",
            "Requests to create an escalation's task, by outcome: created, transient_error, "
            "rejected.",
            ["outcome"],
            registry=self.registry,
        )
        self.twilio_rejects = Counter(
            "escalator_twilio_rejects",
            "Requests TaskRouter refused for good (a 4xx retrying cannot fix), by operation "
            "and Twilio code.",
            ["operation", "code"],
            registry=self.registry,
        )
        self.tasks_after_end = Counter(
            "escalator_tasks_after_end",
            "Tasks created or found for an escalation that had ended meanwhile: canceled.",
            ["how"],
            registry=self.registry,
        )
        self.notifications = Counter(
            "escalator_notifications",
            "PostgreSQL notifications of commits (this replica's and the others'), by channel: "
            "changes (an escalation changed), outbox (a side effect is owed).",
            ["channel"],
            registry=self.registry,
        )
        self.listener_reconnects = Counter(
            "escalator_listener_reconnects",
            "Times the notification listener listened again after losing its connection.",
            registry=self.registry,
        )
        self.listener_failures = Counter(
            "escalator_listener_failures",
            "Notification listener connections that failed, by kind: connect (could not "
            "connect or LISTEN), lost (dropped while listening), internal (a bug, logged).",
            ["kind"],
            registry=self.registry,
        )

    def finished(self, *, outcome: str, reason: str) -> None:
        """Count an escalation that reached a terminal status (``reason`` is its reason code,
        or "unknown" for one the routing file does not list, which bounds the label's values)."""
        self.escalations_finished.labels(outcome=outcome).inc()
        self.outcomes_by_reason.labels(reason=reason, outcome=outcome).inc()
