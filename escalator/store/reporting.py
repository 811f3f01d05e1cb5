"""The store's side of reporting back: listing pages, client cancels, status callbacks owed."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from escalator.domain.changes import callback_body, status_changes
from escalator.domain.escalation import Escalation, Status
from escalator.domain.ids import EscalationId
from escalator.errors import StoreUnavailable
from escalator.store import CANCEL_TASK, CREATE_TASK, STATUS_CALLBACK, Cancel, OutboxItem
from escalator.store.connections import StoreConnections
from escalator.store.rows import escalation_from_rows, escalation_values, history_values
from escalator.store.schema import escalations, history, outbox

__all__ = ["ReportingQueries", "owe_status_callbacks", "save_change", "status_callback_rows"]

_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class _CancelOwed:
    """A cancel row to owe: its payload, when it is due, and whether the create row goes."""

    payload: dict[str, Any]
    due_at: datetime
    drop_create: bool


class _Conflict(Exception):
    """Another writer saved the escalation first (PostgreSQL): roll back and read it again."""


def status_callback_rows(
    before: Escalation, after: Escalation, now: datetime
) -> list[dict[str, Any]]:
    """The outbox rows for each status change from ``before`` to ``after``, when a URL is set."""
    url = after.status_callback_url
    if url is None:
        return []
    return [
        {
            "escalation_id": after.id,
            "kind": STATUS_CALLBACK,
            "due_at": now,
            "created_at": now,
            "payload": {"url": url, "body": callback_body(after, change)},
        }
        for change in status_changes(after, after=len(before.history))
    ]


async def owe_status_callbacks(
    connection: AsyncConnection, before: Escalation, after: Escalation, now: datetime
) -> None:
    """Outbox rows for each status change from ``before`` to ``after``, when a URL is set."""
    rows = status_callback_rows(before, after, now)
    if rows:
        await connection.execute(sa.insert(outbox), rows)


async def save_change(connection: AsyncConnection, before: Escalation, after: Escalation) -> bool:
    """Save ``after`` over ``before`` (optimistic version check) with its new history entries;
    False when another writer saved the escalation first."""
    updated = await connection.execute(
        sa.update(escalations)
        .where(escalations.c.id == after.id, escalations.c.version == before.version)
        .values(escalation_values(after))
    )
    if updated.rowcount != 1:
        return False
    new_entries = after.history[len(before.history) :]
    if new_entries:
        await connection.execute(sa.insert(history), history_values(after.id, new_entries))
    return True


class ReportingQueries(StoreConnections):
    """Mixed into ``SqlStore``: the queries behind list, cancel and status callbacks."""

    async def _load_one(self, connection: AsyncConnection, escalation_id: str) -> Escalation | None:
        found = await self._load_many(connection, escalations.c.id == escalation_id, limit=1)
        return found[0] if found else None

    async def _load_many(
        self, connection: AsyncConnection, where: Any, *, limit: int
    ) -> list[Escalation]:
        rows = (
            (
                await connection.execute(
                    sa.select(escalations)
                    .where(where)
                    .order_by(escalations.c.created_at, escalations.c.id)
                    .limit(limit)
                )
            )
            .mappings()
            .all()
        )
        if not rows:
            return []
        entries = (
            (
                await connection.execute(
                    sa.select(history)
                    .where(history.c.escalation_id.in_([row["id"] for row in rows]))
                    .order_by(history.c.id)
                )
            )
            .mappings()
            .all()
        )
        by_escalation: dict[str, list[Any]] = {}
        for entry in entries:
            by_escalation.setdefault(entry["escalation_id"], []).append(entry)
        return [escalation_from_rows(row, by_escalation.get(row["id"], [])) for row in rows]

    async def list_escalations(
        self,
        *,
        conversation_id: str | None,
        statuses: Collection[Status],
        after: tuple[datetime, EscalationId] | None,
        limit: int,
    ) -> list[Escalation]:
        """Up to ``limit`` escalations ordered by (created_at, id), strictly past ``after``."""
        conditions: list[Any] = []
        if conversation_id is not None:
            conditions.append(escalations.c.conversation_id == conversation_id)
        if statuses:
            conditions.append(escalations.c.status.in_([status.value for status in statuses]))
        if after is not None:
            # Keyset paging: rows created at the same instant are ordered by id.
            created_at, escalation_id = after
            conditions.append(
                sa.or_(
                    escalations.c.created_at > created_at,
                    sa.and_(
                        escalations.c.created_at == created_at, escalations.c.id > escalation_id
                    ),
                )
            )
        async with self._read() as connection:
            return await self._load_many(connection, sa.and_(sa.true(), *conditions), limit=limit)

    async def cancel_escalation(
        self, escalation_id: EscalationId, *, now: datetime, cancel: Cancel
    ) -> tuple[Escalation, Escalation] | None:
        """Cancel in one transaction, with the outbox rows that cancel (or forgo) the task."""
        for _ in range(_ATTEMPTS):
            try:
                return await self._cancel_once(escalation_id, now, cancel)
            except _Conflict:
                continue
        raise StoreUnavailable("the escalation kept changing while it was canceled; retry")

    async def _cancel_once(
        self, escalation_id: EscalationId, now: datetime, cancel: Cancel
    ) -> tuple[Escalation, Escalation] | None:
        async with self._write() as connection:
            before = await self._load_one(connection, escalation_id)
            if before is None:
                return None
            owed = await self._task_cancel_owed(connection, before, now)
            after = cancel(before, owed is not None)
            if after is before:
                return before, before
            if not await save_change(connection, before, after):
                raise _Conflict()
            await owe_status_callbacks(connection, before, after, now)
            if before.task_sid is None and (owed is None or owed.drop_create):
                # Nobody is creating the task now, and nobody will.
                await connection.execute(
                    sa.delete(outbox).where(
                        outbox.c.escalation_id == before.id, outbox.c.kind == CREATE_TASK
                    )
                )
            if owed is not None:
                await connection.execute(
                    sa.insert(outbox).values(
                        escalation_id=before.id,
                        kind=CANCEL_TASK,
                        due_at=owed.due_at,
                        created_at=now,
                        payload=owed.payload,
                    )
                )
        self.changes.publish(after.id)
        return before, after

    async def _task_cancel_owed(
        self, connection: AsyncConnection, before: Escalation, now: datetime
    ) -> _CancelOwed | None:
        """The cancel TaskRouter must be asked for, or None when no task exists or can."""
        if before.task_sid is not None:
            return _CancelOwed({"task_sid": before.task_sid}, now, drop_create=False)
        creating = (
            await connection.execute(
                sa.select(outbox.c.lease_expires_at, outbox.c.ambiguous).where(
                    outbox.c.escalation_id == before.id, outbox.c.kind == CREATE_TASK
                )
            )
        ).first()
        if creating is None:
            return None
        if creating.lease_expires_at is not None and creating.lease_expires_at >= now:
            # A dispatcher may be creating the task right now: the create finishing tells the
            # cancel its task; else, once the lease is over, the task is looked for.
            return _CancelOwed({"find": True}, creating.lease_expires_at, drop_create=False)
        if creating.ambiguous or creating.lease_expires_at is not None:
            # An earlier attempt whose answer was lost (or whose holder died, leaving an
            # expired lease) may have created the task all the same: look for it now.
            return _CancelOwed({"find": True}, now, drop_create=True)
        return None

    async def record_outbox_result(
        self, item: OutboxItem, *, owner: str, change: Callable[[Escalation], Escalation]
    ) -> bool:
        """Drop a done row and save what ``change`` records on its escalation, if still leased."""
        for _ in range(_ATTEMPTS):
            try:
                return await self._record_once(item, owner, change)
            except _Conflict:
                continue
        raise StoreUnavailable("the escalation kept changing; retry")

    async def _record_once(
        self, item: OutboxItem, owner: str, change: Callable[[Escalation], Escalation]
    ) -> bool:
        async with self._write() as connection:
            deleted = await connection.execute(
                sa.delete(outbox).where(outbox.c.id == item.id, outbox.c.lease_owner == owner)
            )
            if deleted.rowcount != 1:
                return False
            before = await self._load_one(connection, item.escalation_id)
            if before is None:
                return True
            after = change(before)
            if after is not before:
                if not await save_change(connection, before, after):
                    raise _Conflict()
                await owe_status_callbacks(connection, before, after, after.updated_at)
        if after is not before:
            self.changes.publish(after.id)
        return True

    async def outbox_backlog_by_kind(self) -> dict[str, int]:
        """How many outbox rows are waiting, by kind."""
        async with self._read() as connection:
            rows = await connection.execute(
                sa.select(outbox.c.kind, sa.func.count()).group_by(outbox.c.kind)
            )
            return {str(kind): int(count) for kind, count in rows.all()}
