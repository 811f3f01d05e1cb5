"""The store on SQLAlchemy Core: one implementation for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from escalator.domain.escalation import OPEN_STATUSES, Escalation
from escalator.domain.ids import EscalationId, OutboxId
from escalator.errors import StoreUnavailable
from escalator.store import (
    CREATE_TASK,
    OUTBOX_KINDS,
    OutboxItem,
)
from escalator.store.engine import WRITE
from escalator.store.feed import ChangeFeed
from escalator.store.ingest import EventIngestion
from escalator.store.migrate import current_revision, head_revision
from escalator.store.reporting import ReportingQueries, owe_status_callbacks
from escalator.store.rows import escalation_from_rows, escalation_values, history_values
from escalator.store.schema import escalations, history, outbox

__all__ = ["SqlStore", "open_store"]

_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
    OSError,
    asyncio.TimeoutError,
)
_OPEN = [status.value for status in OPEN_STATUSES]


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailable() from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable() from exc
        raise


class SqlStore(EventIngestion, ReportingQueries):
    """The store on an async SQLAlchemy engine (SQLite via aiosqlite, PostgreSQL via asyncpg)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.changes = ChangeFeed()
        # SQLite has one writer. Writers queue on this lock instead of in SQLite's busy handler,
        # which sleeps in steps of up to 100 ms (a 1.4 s p99 under load, and "database is
        # locked" once the busy timeout runs out). Group commit is the next step (issue 7).
        self._writer: asyncio.Lock | contextlib.AbstractAsyncContextManager[None] = (
            asyncio.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._writer, _translated(), self.engine.connect() as connection:
            await connection.execution_options(**WRITE)
            async with connection.begin():
                yield connection

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with _translated(), self.engine.connect() as connection, connection.begin():
            yield connection

    async def _load(self, connection: AsyncConnection, where: Any) -> Escalation | None:
        row = (await connection.execute(sa.select(escalations).where(where))).mappings().first()
        if row is None:
            return None
        entries = (
            (
                await connection.execute(
                    sa.select(history)
                    .where(history.c.escalation_id == row["id"])
                    .order_by(history.c.id)
                )
            )
            .mappings()
            .all()
        )
        return escalation_from_rows(row, entries)

    async def _open_for(self, conversation_id: str) -> Escalation | None:
        async with self._read() as connection:
            return await self._load(
                connection,
                sa.and_(
                    escalations.c.conversation_id == conversation_id,
                    escalations.c.status.in_(_OPEN),
                ),
            )

    async def create_escalation(self, escalation: Escalation) -> tuple[Escalation, bool]:
        """Insert an escalation, its history and its outbox row in one transaction."""
        for _ in range(3):
            existing = await self._open_for(escalation.conversation_id)
            if existing is not None:
                return existing, False
            try:
                async with self._write() as connection:
                    await connection.execute(
                        sa.insert(escalations).values(escalation_values(escalation))
                    )
                    await connection.execute(
                        sa.insert(history), history_values(escalation.id, escalation.history)
                    )
                    await connection.execute(
                        sa.insert(outbox).values(
                            escalation_id=escalation.id,
                            kind=CREATE_TASK,
                            due_at=escalation.created_at,
                            created_at=escalation.created_at,
                        )
                    )
            except sa_exc.IntegrityError:
                # Another request opened an escalation for this conversation meanwhile: the
                # partial unique index refused ours. Read theirs on the next turn.
                continue
            return escalation, True
        raise StoreUnavailable("the conversation's escalation kept changing; retry")

    async def get_escalation(self, escalation_id: EscalationId) -> Escalation | None:
        """The escalation with its history, or None."""
        async with self._read() as connection:
            return await self._load(connection, escalations.c.id == escalation_id)

    async def lease_outbox(
        self,
        *,
        owner: str,
        now: datetime,
        lease_for: timedelta,
        limit: int,
        kinds: Collection[str] = OUTBOX_KINDS,
    ) -> list[OutboxItem]:
        """Lease due rows; a row whose earlier lease ran out is marked ambiguous."""
        due = (
            sa.select(outbox.c.id)
            .where(
                # Only kinds this code knows: during a rolling deploy an older replica must not
                # lease (and hold) rows that only newer code can carry out.
                outbox.c.kind.in_(list(kinds)),
                outbox.c.due_at <= now,
                sa.or_(outbox.c.lease_expires_at.is_(None), outbox.c.lease_expires_at < now),
            )
            .order_by(outbox.c.due_at, outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            sa.update(outbox)
            .where(outbox.c.id.in_(due))
            .values(
                lease_owner=owner,
                lease_expires_at=now + lease_for,
                # An expired lease means its holder died or stalled, maybe mid-request.
                ambiguous=sa.or_(outbox.c.ambiguous, outbox.c.lease_owner.is_not(None)),
            )
            .returning(
                outbox.c.id,
                outbox.c.escalation_id,
                outbox.c.kind,
                outbox.c.attempts,
                outbox.c.ambiguous,
                outbox.c.due_at,
                outbox.c.payload,
            )
        )
        async with self._write() as connection:
            rows = (await connection.execute(statement)).mappings().all()
        items = [
            OutboxItem(
                id=OutboxId(row["id"]),
                escalation_id=EscalationId(row["escalation_id"]),
                kind=row["kind"],
                attempts=row["attempts"],
                ambiguous=bool(row["ambiguous"]),
                due_at=row["due_at"],
                payload=row["payload"],
            )
            for row in rows
        ]
        return sorted(items, key=lambda item: (item.due_at, item.id))

    async def complete_outbox(
        self, item: OutboxItem, *, owner: str, previous: Escalation, current: Escalation
    ) -> bool:
        """Save the new state and drop the row; False when the lease or the version was lost."""
        async with self._write() as connection:
            deleted = await connection.execute(
                sa.delete(outbox).where(outbox.c.id == item.id, outbox.c.lease_owner == owner)
            )
            if deleted.rowcount != 1:
                return False
            if current is previous:
                return True
            updated = await connection.execute(
                sa.update(escalations)
                .where(escalations.c.id == current.id, escalations.c.version == previous.version)
                .values(escalation_values(current))
            )
            if updated.rowcount != 1:
                await connection.rollback()
                return False
            new_entries = current.history[len(previous.history) :]
            if new_entries:
                await connection.execute(
                    sa.insert(history), history_values(current.id, new_entries)
                )
            await owe_status_callbacks(connection, previous, current, current.updated_at)
        self.changes.publish(current.id)
        return True

    async def drop_outbox(self, item: OutboxItem, *, owner: str) -> bool:
        """Delete a done row; False when the lease was lost meanwhile."""
        async with self._write() as connection:
            deleted = await connection.execute(
                sa.delete(outbox).where(outbox.c.id == item.id, outbox.c.lease_owner == owner)
            )
        return bool(deleted.rowcount == 1)

    async def retry_outbox(
        self, item: OutboxItem, *, owner: str, due_at: datetime, error: str, ambiguous: bool
    ) -> None:
        """Give the row back for a later attempt."""
        async with self._write() as connection:
            await connection.execute(
                sa.update(outbox)
                .where(outbox.c.id == item.id, outbox.c.lease_owner == owner)
                .values(
                    due_at=due_at,
                    attempts=outbox.c.attempts + 1,
                    last_error=error[:512],
                    ambiguous=sa.or_(outbox.c.ambiguous, sa.literal(ambiguous)),
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )

    async def release_leases(self, *, owner: str) -> int:
        """Release ``owner``'s leases; a request may have been in flight, so mark them ambiguous."""
        async with self._write() as connection:
            result = await connection.execute(
                sa.update(outbox)
                .where(outbox.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None, ambiguous=True)
            )
        return int(result.rowcount)

    async def outbox_backlog(self) -> int:
        """How many outbox rows are waiting."""
        async with self._read() as connection:
            count = await connection.scalar(sa.select(sa.func.count()).select_from(outbox))
        return int(count or 0)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        async with self._read() as connection:
            await connection.execute(sa.text("SELECT 1"))

    async def schema_is_current(self) -> bool:
        """Whether the database is at this code's head revision."""
        async with _translated():
            return await current_revision(self.engine) == head_revision()

    async def close(self) -> None:
        """Dispose of the engine's connections."""
        await self.engine.dispose()

    async def claim_stale(
        self, *, now: datetime, quiet_since: datetime, hold_until: datetime, limit: int
    ) -> list[EscalationId]:
        """Claim open escalations with a task and no news since ``quiet_since``, until
        ``hold_until``: another claim (this replica's or another's) skips them meanwhile."""
        stale = (
            sa.select(escalations.c.id)
            .where(
                escalations.c.status.in_(_OPEN),
                escalations.c.task_sid.is_not(None),
                escalations.c.updated_at <= quiet_since,
                sa.or_(
                    escalations.c.reconcile_after.is_(None),
                    escalations.c.reconcile_after <= now,
                ),
            )
            .order_by(escalations.c.updated_at, escalations.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with self._write() as connection:
            rows = await connection.execute(
                sa.update(escalations)
                .where(escalations.c.id.in_(stale))
                .values(reconcile_after=hold_until)
                .returning(escalations.c.id, escalations.c.updated_at)
            )
            claimed = sorted(rows.all(), key=lambda row: (row[1], row[0]))
        return [EscalationId(row[0]) for row in claimed]

    async def reconcile_later(self, escalation_id: EscalationId, *, at: datetime) -> None:
        """Let the reconciler re-read the escalation again from ``at`` (after a failure)."""
        async with self._write() as connection:
            await connection.execute(
                sa.update(escalations)
                .where(escalations.c.id == escalation_id)
                .values(reconcile_after=at)
            )


async def open_store(
    url: str, *, sqlite_synchronous: Any = "FULL", run_migrations: bool = True
) -> SqlStore:
    """Open the store at ``url``, migrating the schema first unless told not to."""
    from escalator.store.engine import create_engine
    from escalator.store.migrate import migrate

    store = SqlStore(create_engine(url, sqlite_synchronous=sqlite_synchronous))
    if run_migrations:
        try:
            async with _translated():
                await migrate(store.engine)
        except BaseException:
            await store.close()
            raise
    return store
