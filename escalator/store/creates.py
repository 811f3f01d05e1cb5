"""Escalations created in group commits: many acknowledgements, one commit.

Each commit is an fsync, and SQLite has one writer, so one transaction per ``POST
/escalations`` queues every request behind the commits of those before it (and on PostgreSQL
costs a transaction's round trips and a pool connection each). Requests without an
``Idempotency-Key`` that arrive together are created together instead (on SQLite keyed ones
too): in one transaction (on SQLite run whole on the writer thread), two reads for the batch
(the conversations' open escalations, the idempotency keys), the same decisions as one at a
time in arrival order, then one insert per table. Each request is answered after the commit.
New create rows are written leased to this process's dispatcher while it has room (sql.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from escalator.domain.escalation import OPEN_STATUSES, Escalation
from escalator.store import CREATE_TASK, Claim, IdempotencyKey, IdempotencyResult, KeyedCreation
from escalator.store.plans import Plan, Step
from escalator.store.rows import escalation_values, escalations_by_id, history_values
from escalator.store.schema import escalations, history, idempotency_keys, outbox

__all__ = [
    "MAX_CREATE_BATCH",
    "CreatedBatch",
    "PendingCreate",
    "create_plan",
    "expired_keys",
    "outbox_row",
]

# Requests per transaction: enough to amortise the commit, few enough for short IN lists.
MAX_CREATE_BATCH = 100
# Expired keys each batch deletes: more than a batch adds, so the table stays bounded.
_PURGE_BATCH = 2 * MAX_CREATE_BATCH

_OPEN_FOR = sa.select(escalations).where(
    escalations.c.conversation_id.in_(sa.bindparam("conversations", expanding=True)),
    escalations.c.status.in_([status.value for status in OPEN_STATUSES]),
)
_KEYS = sa.select(idempotency_keys).where(
    idempotency_keys.c.key.in_(sa.bindparam("keys", expanding=True))
)
# The ids of the create rows, in the order of the rows given (the claimed ones are handed off).
_INSERT_OUTBOX = sa.insert(outbox).returning(
    outbox.c.id, outbox.c.escalation_id, sort_by_parameter_order=True
)
_FORGET_KEY = sa.delete(idempotency_keys).where(
    idempotency_keys.c.scope == sa.bindparam("old_scope"),
    idempotency_keys.c.key == sa.bindparam("old_key"),
)


@dataclass(frozen=True, slots=True)
class PendingCreate:
    """A request waiting for its batch: the escalation it would create, and its key if any."""

    escalation: Escalation
    key: IdempotencyKey | None = None
    # The dispatcher's lease, when one is to carry the create row out at once.
    claim: Claim | None = None


@dataclass(frozen=True, slots=True)
class _Key:
    fingerprint: str
    escalation_id: str
    expires_at: Any


@dataclass(slots=True)
class _Batch:
    """A batch decided in memory: which conversations are open, which keys are live."""

    open_by_conversation: dict[str, str]
    keys: dict[tuple[str, str], _Key]
    created: dict[str, Escalation] = field(default_factory=dict)
    reclaimed: list[dict[str, str]] = field(default_factory=list)
    key_rows: list[dict[str, Any]] = field(default_factory=list)

    def decide(self, pending: PendingCreate) -> tuple[IdempotencyResult, str, bool]:
        """The result, the escalation id that answers it, and whether that one is new."""
        escalation, key = pending.escalation, pending.key
        if key is not None:
            recorded = self.keys.get((key.scope, key.key))
            if recorded is not None and recorded.expires_at > key.received_at:
                if recorded.fingerprint != key.fingerprint:
                    return IdempotencyResult.MISMATCH, "", False
                return IdempotencyResult.REPLAYED, recorded.escalation_id, False
            if recorded is not None:
                self.reclaimed.append({"old_scope": key.scope, "old_key": key.key})
        answer = self.open_by_conversation.get(escalation.conversation_id)
        new = answer is None
        if answer is None:
            answer = escalation.id
            self.created[answer] = escalation
            self.open_by_conversation[escalation.conversation_id] = answer
        if key is not None:
            self.keys[(key.scope, key.key)] = _Key(key.fingerprint, answer, key.expires_at)
            self.key_rows.append(
                {
                    "scope": key.scope,
                    "key": key.key,
                    "fingerprint": key.fingerprint,
                    "escalation_id": answer,
                    "created_at": key.received_at,
                    "expires_at": key.expires_at,
                }
            )
        return IdempotencyResult.NEW, answer, new


@dataclass(frozen=True, slots=True)
class CreatedBatch:
    """What each request of a batch gets, and the create rows written under a claim (their
    ids by escalation id): those go straight to the dispatcher that claimed them."""

    results: list[KeyedCreation]
    claimed_rows: dict[str, int]


def outbox_row(escalation: Escalation, claim: Claim | None) -> dict[str, Any]:
    """The create row of a new escalation, leased under ``claim`` when there is one."""
    return {
        "escalation_id": escalation.id,
        "kind": CREATE_TASK,
        "due_at": escalation.created_at,
        "created_at": escalation.created_at,
        "lease_owner": claim.owner if claim else None,
        "lease_expires_at": claim.expires_at if claim else None,
    }


def create_plan(batch: Sequence[PendingCreate]) -> Plan[CreatedBatch]:
    """One write transaction's statements: what each request of ``batch`` gets, once written."""
    conversations = sorted({p.escalation.conversation_id for p in batch})
    open_rows = yield Step(_OPEN_FOR, {"conversations": conversations}, reads=True)
    keys = sorted({p.key.key for p in batch if p.key is not None})
    stored_keys = (yield Step(_KEYS, {"keys": keys}, reads=True)) if keys else []
    state = _Batch(
        open_by_conversation={row["conversation_id"]: row["id"] for row in open_rows},
        keys={
            (row["scope"], row["key"]): _Key(
                row["fingerprint"], row["escalation_id"], row["expires_at"]
            )
            for row in stored_keys
        },
    )
    decisions = [state.decide(pending) for pending in batch]
    created = list(state.created.values())
    claims = {p.escalation.id: p.claim for p in batch if p.claim is not None}
    claimed_rows: dict[str, int] = {}
    if state.reclaimed:
        yield Step(_FORGET_KEY, state.reclaimed)
    if created:
        yield Step(sa.insert(escalations), [escalation_values(e) for e in created])
        yield Step(
            sa.insert(history), [row for e in created for row in history_values(e.id, e.history)]
        )
        rows = yield Step(
            _INSERT_OUTBOX, [outbox_row(e, claims.get(e.id)) for e in created], reads=True
        )
        claimed_rows = {
            row["escalation_id"]: row["id"] for row in rows if row["escalation_id"] in claims
        }
    if state.key_rows:
        yield Step(sa.insert(idempotency_keys), state.key_rows)
        now = min(p.key.received_at for p in batch if p.key is not None)
        yield Step(expired_keys(now, limit=_PURGE_BATCH))
    others = yield from escalations_by_id(
        sorted({i for _, i, new in decisions if i and not new} - state.created.keys())
    )
    known = {**others, **state.created}
    results = [
        KeyedCreation(result, known.get(answer), new)
        if result is not IdempotencyResult.MISMATCH
        else KeyedCreation(result)
        for result, answer, new in decisions
    ]
    return CreatedBatch(results, claimed_rows)


def expired_keys(now: Any, *, limit: int) -> sa.Delete:
    """Delete up to ``limit`` keys expired by ``now``, oldest first, skipping rows another
    transaction holds (PostgreSQL; SQLite has one writer and no row locks)."""
    expired = (
        sa.select(idempotency_keys.c.scope, idempotency_keys.c.key)
        .where(idempotency_keys.c.expires_at <= now)
        .order_by(idempotency_keys.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return sa.delete(idempotency_keys).where(
        sa.tuple_(idempotency_keys.c.scope, idempotency_keys.c.key).in_(expired)
    )
