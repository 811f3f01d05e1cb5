"""The store's side of the outbox: leasing due rows, completing, retrying and releasing them."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from escalator.domain.escalation import Escalation
from escalator.domain.ids import EscalationId, OutboxId, TaskSid
from escalator.store import CANCEL_TASK, OUTBOX_KINDS, OutboxItem
from escalator.store.connections import StoreConnections
from escalator.store.reporting import owe_status_callbacks, save_change
from escalator.store.schema import escalations, outbox

__all__ = ["OutboxQueries"]

# How often retry_outbox reads an escalation again when another writer saved it first.
_RECORD_ATTEMPTS = 5


class OutboxQueries(StoreConnections):
    """Mixed into ``SqlStore``: the outbox, leased by the dispatchers of every replica."""

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
        self,
        item: OutboxItem,
        *,
        owner: str,
        previous: Escalation,
        current: Escalation,
        cancel_task: TaskSid | None = None,
    ) -> bool:
        """Save the new state and drop the row, and owe ``cancel_task``'s cancel (due at
        ``current.updated_at``); False when the lease or the version was lost."""
        async with self._write() as connection:
            deleted = await connection.execute(
                sa.delete(outbox).where(outbox.c.id == item.id, outbox.c.lease_owner == owner)
            )
            if deleted.rowcount != 1:
                return False
            if cancel_task is not None:
                await self._owe_late_cancel(connection, current, cancel_task)
            if current is previous:
                return True
            if not await save_change(connection, previous, current):
                await connection.rollback()
                return False
            await owe_status_callbacks(connection, previous, current, current.updated_at)
        self.changes.publish(current.id)
        return True

    async def _owe_late_cancel(
        self, connection: AsyncConnection, escalation: Escalation, task_sid: TaskSid
    ) -> None:
        """Owe the cancel of a task that appeared after its escalation ended, or while its
        client's cancel waited."""
        now = escalation.updated_at
        # A client cancel that came while the task was being created left a cancel row that
        # will look the task up once the create's lease is over: tell it the task instead,
        # due now (one cancel, no lookup). A row already leased may have looked too early:
        # owe a second cancel then (cancelling a canceled task changes nothing).
        told = await connection.execute(
            sa.update(outbox)
            .where(
                outbox.c.escalation_id == escalation.id,
                outbox.c.kind == CANCEL_TASK,
                outbox.c.lease_owner.is_(None),
            )
            .values(payload={"task_sid": task_sid}, due_at=now)
        )
        if told.rowcount == 0:
            await connection.execute(
                sa.insert(outbox).values(
                    escalation_id=escalation.id,
                    kind=CANCEL_TASK,
                    due_at=now,
                    created_at=now,
                    payload={"task_sid": task_sid},
                )
            )

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
