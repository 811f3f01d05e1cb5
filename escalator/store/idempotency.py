"""The store's side of ``Idempotency-Key``: the key is claimed in the transaction that uses it."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from escalator.domain.escalation import Escalation
from escalator.domain.ids import EscalationId
from escalator.store import IdempotencyKey, IdempotencyResult, KeyedCreation
from escalator.store.connections import StoreConnections
from escalator.store.creates import PendingCreate, expired_keys
from escalator.store.group_commit import GroupCommit
from escalator.store.schema import escalations, idempotency_keys

__all__ = ["IdempotencyKeys"]

_ATTEMPTS = 3
# How long a keyed request waits for an earlier transaction holding its key (or its
# conversation) before it answers 409. A healthy transaction holds them for milliseconds.
_IN_FLIGHT_WAIT = "1s"
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when lock_timeout ran out
# Expired keys each claim deletes: more than the one row a claim adds, so the table stays bounded.
_PURGE_BATCH = 10


class _KeyTaken(Exception):
    """A live row holds the key: roll back and read it."""


def _lock_timed_out(exc: sa_exc.DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE


class IdempotencyKeys(StoreConnections):
    """Mixed into ``SqlStore``: escalations created under an ``Idempotency-Key``.

    Insert first: the key row is the first write of the transaction that creates the escalation
    (or records the conversation's open one), so the key and its answer commit together and a
    crash leaves no half-claimed key. A second request with the key conflicts on the primary key
    (scope, key): SQLite has one writer, so it finds the row committed; PostgreSQL makes it wait
    for the first transaction, then it finds the row (or, past ``_IN_FLIGHT_WAIT``, answers
    CONFLICT). It then reads the row: same fingerprint, a replay; another, a mismatch.
    """

    _creates: GroupCommit[PendingCreate, KeyedCreation]

    async def create_escalation(
        self, escalation: Escalation, *, key: IdempotencyKey | None = None, alone: bool = False
    ) -> tuple[Escalation, bool]:
        raise NotImplementedError

    async def create_escalation_with_key(
        self, escalation: Escalation, key: IdempotencyKey
    ) -> KeyedCreation:
        """Replay or refuse a live key; else create (or find) the escalation and claim the key."""
        if self._thread_engine is not None:  # SQLite: decided in the batch's transaction
            return await self._creates.submit(PendingCreate(escalation, key))
        for _ in range(_ATTEMPTS):
            recorded = await self._recorded(key)
            if recorded is not None:
                return recorded
            try:
                stored, created = await self.create_escalation(escalation, key=key)
            except _KeyTaken:
                continue
            except sa_exc.DBAPIError as exc:
                if not _lock_timed_out(exc):
                    raise
                return KeyedCreation(IdempotencyResult.CONFLICT)
            return KeyedCreation(IdempotencyResult.NEW, stored, created)
        # Taken on every turn yet never readable: the key keeps expiring and being claimed again.
        return KeyedCreation(IdempotencyResult.CONFLICT)

    async def _recorded(self, key: IdempotencyKey) -> KeyedCreation | None:
        """What a live key answers: REPLAYED with its escalation, or MISMATCH; None if absent."""
        async with self._read() as connection:
            row = (
                await connection.execute(
                    sa.select(
                        idempotency_keys.c.fingerprint, idempotency_keys.c.escalation_id
                    ).where(
                        idempotency_keys.c.scope == key.scope,
                        idempotency_keys.c.key == key.key,
                        idempotency_keys.c.expires_at > key.received_at,
                    )
                )
            ).first()
            if row is None:
                return None
            if row.fingerprint != key.fingerprint:
                return KeyedCreation(IdempotencyResult.MISMATCH)
            escalation = await self._load(connection, escalations.c.id == row.escalation_id)
        # The foreign key cascades: a key never outlives its escalation.
        return KeyedCreation(IdempotencyResult.REPLAYED, escalation) if escalation else None

    async def _remember_key(self, key: IdempotencyKey, escalation_id: EscalationId) -> None:
        """Claim the key for an escalation that already exists (the conversation's open one)."""
        async with self._write() as connection:
            await self._claim_key(connection, key, escalation_id)

    async def _claim_key(
        self, connection: AsyncConnection, key: IdempotencyKey, escalation_id: EscalationId
    ) -> None:
        """The first write of a transaction: take the key (over an expired row) or raise
        ``_KeyTaken``; then delete a few expired keys."""
        postgres = self.engine.dialect.name == "postgresql"
        if postgres:
            await connection.execute(
                sa.select(sa.func.set_config("lock_timeout", _IN_FLIGHT_WAIT, True))
            )
        insert = (postgresql.insert if postgres else sqlite.insert)(idempotency_keys).values(
            scope=key.scope,
            key=key.key,
            fingerprint=key.fingerprint,
            escalation_id=escalation_id,
            created_at=key.received_at,
            expires_at=key.expires_at,
        )
        # On a live row, nothing: PostgreSQL first waits for the transaction that wrote it.
        claim = insert.on_conflict_do_update(
            index_elements=[idempotency_keys.c.scope, idempotency_keys.c.key],
            set_={
                name: insert.excluded[name]
                for name in ("fingerprint", "escalation_id", "created_at", "expires_at")
            },
            where=idempotency_keys.c.expires_at <= key.received_at,
        )
        if (await connection.execute(claim)).rowcount != 1:
            raise _KeyTaken()
        # After the claim, and skipping rows others hold: the claim is this transaction's only
        # wait on a key, so two claims never wait on each other's purges (no deadlock).
        await connection.execute(expired_keys(key.received_at, limit=_PURGE_BATCH))
