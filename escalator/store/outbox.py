"""The store's side of the outbox: leasing due rows, completing, retrying and releasing them."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from functools import partial

import sqlalchemy as sa

from escalator.domain.escalation import Escalation
from escalator.domain.ids import EscalationId, OutboxId, TaskSid
from escalator.store import CREATE_TASK, OUTBOX_KINDS, OutboxItem
from escalator.store.completes import Completion, LostLease, complete_plan
from escalator.store.connections import StoreConnections
from escalator.store.group_commit import GroupCommit
from escalator.store.plans import Plan, Step, run_in_thread, run_on_loop
from escalator.store.recent import RecentEscalations
from escalator.store.reporting import owe_status_callbacks, save_change
from escalator.store.rows import escalations_by_id
from escalator.store.schema import escalations, outbox

__all__ = ["OutboxQueries"]

# How often retry_outbox reads an escalation again when another writer saved it first.
_RECORD_ATTEMPTS = 5


def _lease_plan(
    *, owner: str, until: datetime, now: datetime, limit: int, kinds: Collection[str]
) -> Plan[list[OutboxItem]]:
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
            lease_expires_at=until,
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
    rows = yield Step(statement, reads=True)
    creates = sorted({row["escalation_id"] for row in rows if row["kind"] == CREATE_TASK})
    loaded = yield from escalations_by_id(creates)
    items = [
        OutboxItem(
            id=OutboxId(row["id"]),
            escalation_id=EscalationId(row["escalation_id"]),
            kind=row["kind"],
            attempts=row["attempts"],
            ambiguous=bool(row["ambiguous"]),
            due_at=row["due_at"],
            payload=row["payload"],
            escalation=loaded.get(row["escalation_id"]) if row["kind"] == CREATE_TASK else None,
        )
        for row in rows
    ]
    return sorted(items, key=lambda item: (item.due_at, item.id))


class OutboxQueries(StoreConnections):
    """Mixed into ``SqlStore``: the outbox, leased by the dispatchers of every replica."""

    _completions: GroupCommit[Completion, bool]
    _recent: RecentEscalations

    async def lease_outbox(
        self,
        *,
        owner: str,
        now: datetime,
        lease_for: timedelta,
        limit: int,
        kinds: Collection[str] = OUTBOX_KINDS,
    ) -> list[OutboxItem]:
        """Lease due rows, create rows with their escalations; a row whose earlier lease ran
        out is marked ambiguous."""
        plan = _lease_plan(owner=owner, until=now + lease_for, now=now, limit=limit, kinds=kinds)
        if self._thread_engine is not None:
            return await self._write_in_thread(partial(run_in_thread, plan))
        async with self._write() as connection:
            return await run_on_loop(plan, connection)

    async def complete_outbox(
        self,
        item: OutboxItem,
        *,
        owner: str,
        previous: Escalation,
        current: Escalation,
        cancel_task: TaskSid | None = None,
    ) -> bool:
        """Save the new state and drop the row, and owe ``cancel_task``'s cancel (due at
        ``current.updated_at``); False when the lease or the version was lost. Completions
        ready together share a transaction (completes.py)."""
        return await self._completions.submit(
            Completion(item, owner, previous, current, cancel_task)
        )

    async def _complete_batch(self, batch: Sequence[Completion]) -> list[bool | BaseException]:
        """A batch of completions in one transaction: on SQLite's writer thread (one writer,
        so a lease checked in the transaction cannot be lost in it), or on PostgreSQL in the
        order of their escalations' ids (two batches lock rows in the same order, never in a
        cycle); there, a batch that met another writer is done again one at a time."""
        if self._thread_engine is not None:
            done = await self._write_in_thread(partial(run_in_thread, complete_plan(batch)))
            self._completed([c for c, ok in zip(batch, done, strict=True) if ok])
            return list(done)
        ordered = sorted(range(len(batch)), key=lambda i: (batch[i].current.id, i))
        try:
            async with self._write() as connection:
                done = await run_on_loop(complete_plan([batch[i] for i in ordered]), connection)
        except Exception as exc:
            if len(batch) > 1:
                return [await self._complete_alone(completion) for completion in batch]
            if isinstance(exc, LostLease):
                return [False]
            raise
        results = [False] * len(batch)
        for position, ok in zip(ordered, done, strict=True):
            results[position] = ok
        self._completed([c for c, ok in zip(batch, results, strict=True) if ok])
        return list(results)

    async def _complete_alone(self, completion: Completion) -> bool | BaseException:
        try:
            return (await self._complete_batch([completion]))[0]
        except Exception as exc:  # this completion's own failure, not the others'
            return exc

    def _completed(self, completions: Sequence[Completion]) -> None:
        """After the commit: events find these states decoded, and watchers hear of them."""
        self._recent.remember(c.current for c in completions)
        for completion in completions:
            if completion.current is not completion.previous:
                self.changes.publish(completion.current.id)

    async def drop_outbox(self, item: OutboxItem, *, owner: str) -> bool:
        """Delete a done row; False when the lease was lost meanwhile."""
        async with self._write() as connection:
            deleted = await connection.execute(
                sa.delete(outbox).where(outbox.c.id == item.id, outbox.c.lease_owner == owner)
            )
        return bool(deleted.rowcount == 1)

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
        """Give the row back for a later attempt, with what ``record`` notes on the escalation
        (e.g. the attempts that failed) in the same transaction."""
        give_back = (
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
        for _ in range(_RECORD_ATTEMPTS):
            async with self._write() as connection:
                given_back = await connection.execute(give_back)
                if record is None or given_back.rowcount != 1:
                    return
                before = await self._load(connection, escalations.c.id == item.escalation_id)
                after = record(before) if before is not None else None
                if before is None or after is None or after is before:
                    return
                if await save_change(connection, before, after):
                    await owe_status_callbacks(connection, before, after, after.updated_at)
                    break
                # Another writer saved the escalation meanwhile (PostgreSQL): read it again.
                await connection.rollback()
        else:
            # It kept changing: the row goes back all the same, what it would note unsaved.
            await self.retry_outbox(
                item, owner=owner, due_at=due_at, error=error, ambiguous=ambiguous
            )
            return
        self.changes.publish(item.escalation_id)

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
