"""The store on SQLAlchemy Core: one implementation for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from escalator.domain.escalation import OPEN_STATUSES, Escalation
from escalator.domain.ids import EscalationId, OutboxId
from escalator.errors import StoreUnavailable
from escalator.store import (
    CREATE_TASK,
    Handoff,
    IdempotencyKey,
    IdempotencyResult,
    KeyedCreation,
    OutboxItem,
)
from escalator.store.completes import MAX_COMPLETE_BATCH
from escalator.store.creates import (
    MAX_CREATE_BATCH,
    CreatedBatch,
    PendingCreate,
    create_plan,
    outbox_row,
)
from escalator.store.engine import WRITE
from escalator.store.feed import ChangeFeed
from escalator.store.group_commit import GroupCommit
from escalator.store.idempotency import IdempotencyKeys
from escalator.store.ingest import MAX_EVENT_BATCH, RECENT_ESCALATIONS, EventIngestion
from escalator.store.migrate import current_revision, serves_revision
from escalator.store.outbox import OutboxQueries
from escalator.store.plans import run_in_thread, run_on_loop
from escalator.store.recent import RecentEscalations
from escalator.store.reporting import ReportingQueries
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
Result = TypeVar("Result")
# What a batch of creates answers each of its requests: its creation, or its own error.
Outcome = KeyedCreation | BaseException


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


class SqlStore(EventIngestion, OutboxQueries, ReportingQueries, IdempotencyKeys):
    """The store on an async SQLAlchemy engine (SQLite via aiosqlite, PostgreSQL via asyncpg)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        thread_engine: Engine | None = None,
        recent_escalations: int = RECENT_ESCALATIONS,
    ) -> None:
        self.engine = engine
        self.changes = ChangeFeed()
        # SQLite only: a synchronous engine on the same file for transactions run whole in a
        # worker thread (the event batches; see ingest.py), one thread, so one at a time.
        self._thread_engine = thread_engine
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        # SQLite has one writer. Writers queue on this lock instead of in SQLite's busy handler,
        # which sleeps in steps of up to 100 ms (a 1.4 s p99 under load, and "database is
        # locked" once the busy timeout runs out). Events also share commits (ingest.py).
        self._writer: asyncio.Lock | contextlib.AbstractAsyncContextManager[None] = (
            asyncio.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        self._event_batches = GroupCommit(self._ingest_batch, max_batch=MAX_EVENT_BATCH)
        self._recent = RecentEscalations(recent_escalations)
        self._creates = GroupCommit(self._create_batch, max_batch=MAX_CREATE_BATCH)
        self._completions = GroupCommit(self._complete_batch, max_batch=MAX_COMPLETE_BATCH)
        self._handoff: Handoff | None = None

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._writer, _translated(), self.engine.connect() as connection:
            await connection.execution_options(**WRITE)
            async with connection.begin():
                yield connection

    async def _write_in_thread(self, work: Callable[[Connection], Result]) -> Result:
        """Run ``work`` in one write transaction on the worker thread, holding the writer lock
        until it is over, even when the caller is cancelled meanwhile."""
        async with self._writer, _translated():
            done = asyncio.get_running_loop().run_in_executor(
                self._thread, self._in_transaction, work
            )
            try:
                return await asyncio.shield(done)
            except asyncio.CancelledError:
                await asyncio.wait([done])
                raise

    def _in_transaction(self, work: Callable[[Connection], Result]) -> Result:
        assert self._thread_engine is not None
        with self._thread_engine.connect() as connection:
            connection.execution_options(**WRITE)
            with connection.begin():
                return work(connection)

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

    def hand_new_work_to(self, handoff: Handoff | None) -> None:
        """Offer new escalations' create rows to ``handoff`` from now on (None: to nobody)."""
        self._handoff = handoff

    async def _create_batch(self, batch: Sequence[PendingCreate]) -> list[Outcome]:
        """Create a batch of escalations in one transaction, their create rows leased to this
        process's dispatcher while it has room (and handed to it once committed)."""
        handoff = self._handoff
        if handoff is not None:
            batch = [replace(p, claim=handoff.claim()) for p in batch]
        try:
            done = await self._run_create_plan(batch)
        except _OneAtATime:
            # Another replica opened one of these conversations meanwhile (PostgreSQL): the
            # partial unique index refused the whole batch. Each request on its own instead.
            _hand_over(handoff, batch, CreatedBatch([], {}))
            return [await self._create_alone(p.escalation) for p in batch]
        except BaseException:
            _hand_over(handoff, batch, CreatedBatch([], {}))
            raise
        _hand_over(handoff, batch, done)
        return list(done.results)

    async def _run_create_plan(self, batch: Sequence[PendingCreate]) -> CreatedBatch:
        if self._thread_engine is not None:
            return await self._write_in_thread(partial(run_in_thread, create_plan(batch)))
        try:
            async with self._write() as connection:
                return await run_on_loop(create_plan(batch), connection)
        except sa_exc.IntegrityError:
            raise _OneAtATime() from None

    async def _create_alone(self, escalation: Escalation) -> Outcome:
        try:
            stored, created = await self.create_escalation(escalation, key=None, alone=True)
        except Exception as exc:  # this request's own failure, not the batch's
            return exc
        return KeyedCreation(IdempotencyResult.NEW, stored, created)

    async def create_escalation(
        self, escalation: Escalation, *, key: IdempotencyKey | None = None, alone: bool = False
    ) -> tuple[Escalation, bool]:
        """Insert an escalation, its history and its outbox row (and claim ``key``) in one
        transaction; with ``key``, ``_KeyTaken`` when a live row holds it (idempotency.py).
        Requests without a key that arrive together share the transaction (creates.py), and
        so do keyed ones on SQLite (idempotency.py); ``alone`` takes one of its own."""
        if key is None and not alone:
            created = await self._creates.submit(PendingCreate(escalation))
            assert created.escalation is not None
            return created.escalation, created.created
        handoff = self._handoff
        pending = PendingCreate(escalation, key, handoff.claim() if handoff else None)
        try:
            stored, outbox_id = await self._insert_alone(pending)
        except BaseException:
            _hand_over(handoff, [pending], CreatedBatch([], {}))
            raise
        rows: dict[str, int] = {escalation.id: outbox_id} if outbox_id is not None else {}
        answer = KeyedCreation(IdempotencyResult.NEW, stored, outbox_id is not None)
        _hand_over(handoff, [pending], CreatedBatch([answer], rows))
        return stored, answer.created

    async def _insert_alone(self, pending: PendingCreate) -> tuple[Escalation, int | None]:
        """The per-request create: the stored escalation and its create row's id (None when
        the conversation's open escalation answers)."""
        escalation, key = pending.escalation, pending.key
        for _ in range(3):
            existing = await self._open_for(escalation.conversation_id)
            if existing is not None:
                if key is not None:
                    await self._remember_key(key, existing.id)
                return existing, None
            try:
                async with self._write() as connection:
                    if key is not None:
                        await self._claim_key(connection, key, escalation.id)
                    await connection.execute(
                        sa.insert(escalations).values(escalation_values(escalation))
                    )
                    await connection.execute(
                        sa.insert(history), history_values(escalation.id, escalation.history)
                    )
                    outbox_id = await connection.scalar(
                        sa.insert(outbox)
                        .values(outbox_row(escalation, pending.claim))
                        .returning(outbox.c.id)
                    )
            except sa_exc.IntegrityError:
                # Another request opened an escalation for this conversation meanwhile: the
                # partial unique index refused ours. Read theirs on the next turn.
                continue
            return escalation, int(outbox_id)
        raise StoreUnavailable("the conversation's escalation kept changing; retry")

    async def get_escalation(self, escalation_id: EscalationId) -> Escalation | None:
        """The escalation with its history, or None."""
        async with self._read() as connection:
            return await self._load(connection, escalations.c.id == escalation_id)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        async with self._read() as connection:
            await connection.execute(sa.text("SELECT 1"))

    async def schema_is_current(self) -> bool:
        """Whether this code can serve the database's schema: at its head revision, or at a
        newer one (see ``serves_revision``)."""
        async with _translated():
            return serves_revision(await current_revision(self.engine))

    async def close(self) -> None:
        """Finish the batch being written, then dispose of the engine's connections."""
        await self._creates.close()
        await self._completions.close()
        await self._event_batches.close()
        await self.engine.dispose()
        self._thread.shutdown(wait=True)
        if self._thread_engine is not None:
            self._thread_engine.dispose()

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


class _OneAtATime(Exception):
    """A batch of creates met another writer's row: create each of its requests on its own."""


def _hand_over(handoff: Handoff | None, batch: Sequence[PendingCreate], done: CreatedBatch) -> None:
    """Give each claimed create row to the dispatcher that claimed it, once committed (or
    give the claim back when nothing was written under it)."""
    if handoff is None:
        return
    created = {c.escalation.id for c in done.results if c.created and c.escalation is not None}
    if any(p.claim is None and p.escalation.id in created for p in batch):
        handoff.left_unleased()
    for pending in batch:
        if pending.claim is None:
            continue
        row = done.claimed_rows.get(pending.escalation.id)
        if row is None:
            handoff.take(pending.claim, None)
            continue
        escalation = pending.escalation
        item = OutboxItem(
            id=OutboxId(row),
            escalation_id=escalation.id,
            kind=CREATE_TASK,
            attempts=0,
            ambiguous=False,
            due_at=escalation.created_at,
            escalation=escalation,
        )
        handoff.take(pending.claim, item)


async def open_store(
    url: str,
    *,
    sqlite_synchronous: Any = "FULL",
    run_migrations: bool = True,
    recent_escalations: int = RECENT_ESCALATIONS,
) -> SqlStore:
    """Open the store at ``url``, migrating the schema first unless told not to;
    ``recent_escalations`` is how many escalations events may find decoded (recent.py)."""
    from escalator.store.engine import create_engine, create_thread_engine
    from escalator.store.migrate import migrate

    store = SqlStore(
        create_engine(url, sqlite_synchronous=sqlite_synchronous),
        thread_engine=create_thread_engine(url, sqlite_synchronous=sqlite_synchronous),
        recent_escalations=recent_escalations,
    )
    if run_migrations:
        try:
            async with _translated():
                await migrate(store.engine)
        except BaseException:
            await store.close()
            raise
    return store
