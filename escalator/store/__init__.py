"""Persistence behind one interface: SQLite (embedded default) and PostgreSQL (replicas)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from escalator.domain.effects import WorkerReset
from escalator.domain.escalation import Escalation, Status
from escalator.domain.events import TaskRouterEvent
from escalator.domain.ids import EscalationId, OutboxId, TaskSid
from escalator.store.feed import ChangeFeed

__all__ = [
    "CANCEL_TASK",
    "CREATE_TASK",
    "OUTBOX_KINDS",
    "RESET_WORKER",
    "STATUS_CALLBACK",
    "Cancel",
    "Claim",
    "Handoff",
    "IdempotencyKey",
    "IdempotencyResult",
    "IngestResult",
    "Ingested",
    "KeyedCreation",
    "OutboxItem",
    "Reaction",
    "Store",
]

CREATE_TASK = "create_task"
RESET_WORKER = "reset_worker"
CANCEL_TASK = "cancel_task"
STATUS_CALLBACK = "status_callback"
# Every kind of outbox row this version of escalator can carry out.
OUTBOX_KINDS = frozenset({CREATE_TASK, RESET_WORKER, CANCEL_TASK, STATUS_CALLBACK})

# Cancels an escalation for its client (returns it unchanged when it cannot be canceled); the
# flag says whether a task may exist, so that only TaskRouter's answer can settle the cancel.
Cancel = Callable[[Escalation, bool], Escalation]

# What an event does to the escalation it concerns: its new state and the side effects owed,
# or None when the event changes nothing (it is then not stored).
Reaction = Callable[[Escalation], tuple[Escalation, tuple[WorkerReset, ...]] | None]


class IngestResult(StrEnum):
    """What became of an event callback."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    NOT_OURS = "not_ours"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class Ingested:
    """The result of ingesting one event, with the escalation before and after it."""

    result: IngestResult
    before: Escalation | None = None
    after: Escalation | None = None
    effects: tuple[WorkerReset, ...] = ()


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A side effect owed to TaskRouter, leased by one dispatcher at a time."""

    id: OutboxId
    escalation_id: EscalationId
    kind: str
    attempts: int
    ambiguous: bool
    due_at: datetime
    payload: dict[str, Any] | None = None
    # A create row's escalation as committed when the row was leased or written, so that the
    # dispatcher need not read it again (None: read it).
    escalation: Escalation | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A dispatcher's lease on a create row not yet written: the row is written leased to
    ``owner`` until ``expires_at``, and handed to that dispatcher once committed."""

    owner: str
    expires_at: datetime
    # When the dispatcher must be done with the row, on its event loop's clock.
    deadline: float


class Handoff(Protocol):
    """Carries out new escalations' create rows as soon as they are committed, without leasing
    or reading them again (the dispatcher of this process)."""

    def claim(self) -> Claim | None:
        """A lease for one new create row, or None (no room in hand: the row is written
        unleased, and the dispatcher leases it in its turn)."""
        ...

    def take(self, claim: Claim, item: OutboxItem | None) -> None:
        """The row written under ``claim``, committed, with its escalation; None when nothing
        was written under it (the conversation had an open escalation, or the transaction
        failed)."""
        ...

    def left_unleased(self) -> None:
        """Create rows were committed without a claim: lease them in turn."""
        ...


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """An ``Idempotency-Key`` sent with one request, as the store keeps it."""

    scope: str  # whose key: a SHA-256 of the API key that sent it, never the key itself
    key: str
    fingerprint: str  # a SHA-256 of the canonical request: same key, same request?
    received_at: datetime
    expires_at: datetime


class IdempotencyResult(StrEnum):
    """What became of a request that carried an ``Idempotency-Key``."""

    NEW = "new"
    REPLAYED = "replayed"
    CONFLICT = "conflict"
    MISMATCH = "mismatch"


@dataclass(frozen=True, slots=True)
class KeyedCreation:
    """The answer to a keyed ``create_escalation``: the escalation when NEW or REPLAYED."""

    result: IdempotencyResult
    escalation: Escalation | None = None
    created: bool = False


class Store(Protocol):
    """What the service needs from a database."""

    def hand_new_work_to(self, handoff: Handoff | None) -> None:
        """From now on, offer the create rows of new escalations to ``handoff`` (None: to
        nobody; they wait for a lease)."""
        ...

    async def create_escalation(self, escalation: Escalation) -> tuple[Escalation, bool]:
        """Insert an escalation and its outbox row in one transaction.

        Returns the stored escalation and True, or the conversation's open escalation and False.
        """
        ...

    async def get_escalation(self, escalation_id: EscalationId) -> Escalation | None:
        """The escalation with its history, or None."""
        ...

    async def create_escalation_with_key(
        self, escalation: Escalation, key: IdempotencyKey
    ) -> KeyedCreation:
        """``create_escalation`` under an ``Idempotency-Key``, recorded in the same transaction.

        A live key from the same scope answers instead: REPLAYED (its escalation, as it is now)
        for the same fingerprint, MISMATCH for another; CONFLICT while an earlier request with
        the key is still in its transaction (PostgreSQL only: SQLite has one writer).
        """
        ...

    async def lease_outbox(
        self,
        *,
        owner: str,
        now: datetime,
        lease_for: timedelta,
        limit: int,
        kinds: Collection[str] = OUTBOX_KINDS,
    ) -> list[OutboxItem]:
        """Lease up to ``limit`` due outbox rows whose lease is free or expired."""
        ...

    async def complete_outbox(
        self,
        item: OutboxItem,
        *,
        owner: str,
        previous: Escalation,
        current: Escalation,
        cancel_task: TaskSid | None = None,
    ) -> bool:
        """Save the escalation's new state and drop the outbox row, if we still hold the lease;
        with ``cancel_task``, owe TaskRouter that task's cancel in the same transaction."""
        ...

    async def ingest_event(
        self, event: TaskRouterEvent, *, received_at: datetime, react: Reaction
    ) -> Ingested:
        """In one transaction: store ``event`` once, apply ``react`` to its escalation, save
        the result (optimistic version check) and its side effects' outbox rows."""
        ...

    async def drop_outbox(self, item: OutboxItem, *, owner: str) -> bool:
        """Delete a done outbox row, if we still hold its lease."""
        ...

    async def retry_outbox(
        self,
        item: OutboxItem,
        *,
        owner: str,
        due_at: datetime,
        error: str,
        ambiguous: bool,
        record: Callable[[Escalation], Escalation] | None = None,
    ) -> None:
        """Give the row back, due again at ``due_at``, remembering what went wrong; with
        ``record``, save what it records on the escalation in the same transaction."""
        ...

    async def release_leases(self, *, owner: str) -> int:
        """Release every lease ``owner`` holds (on shutdown), so another process takes over."""
        ...

    async def outbox_backlog(self) -> int:
        """How many side effects are still owed."""
        ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        ...

    async def schema_is_current(self) -> bool:
        """Whether this code can serve the schema: at its head revision, or a newer one."""
        ...

    async def close(self) -> None:
        """Release the connections."""
        ...

    async def list_escalations(
        self,
        *,
        conversation_id: str | None,
        statuses: Collection[Status],
        after: tuple[datetime, EscalationId] | None,
        limit: int,
    ) -> list[Escalation]:
        """Up to ``limit`` escalations ordered by (created_at, id), strictly past ``after``."""
        ...

    async def cancel_escalation(
        self, escalation_id: EscalationId, *, now: datetime, cancel: Cancel
    ) -> tuple[Escalation, Escalation] | None:
        """In one transaction: apply ``cancel`` and, when a task may exist, owe TaskRouter its
        cancel; the escalation before and after (the same object when ``cancel`` changed
        nothing)."""
        ...

    async def record_outbox_result(
        self, item: OutboxItem, *, owner: str, change: Callable[[Escalation], Escalation]
    ) -> bool:
        """Drop a done row and save what ``change`` records on its escalation, if still leased."""
        ...

    async def outbox_backlog_by_kind(self) -> dict[str, int]:
        """How many side effects are still owed, by kind."""
        ...

    @property
    def changes(self) -> ChangeFeed:
        """Where the store publishes the ids of escalations it changed, after each commit."""
        ...

    async def claim_stale(
        self, *, now: datetime, quiet_since: datetime, hold_until: datetime, limit: int
    ) -> list[EscalationId]:
        """Claim up to ``limit`` open escalations that have a task and no news since
        ``quiet_since``; none of them is claimed again before ``hold_until``."""
        ...

    async def reconcile_later(self, escalation_id: EscalationId, *, at: datetime) -> None:
        """Let the reconciler claim the escalation again from ``at``."""
        ...
