"""The store's side of TaskRouter events: each stored once and applied in one transaction."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from escalator.domain.escalation import Escalation
from escalator.domain.events import TaskRouterEvent
from escalator.errors import StoreUnavailable
from escalator.store import RESET_WORKER, Ingested, IngestResult, Reaction
from escalator.store.feed import ChangeFeed
from escalator.store.reporting import owe_status_callbacks
from escalator.store.rows import escalation_values, history_values
from escalator.store.schema import escalations, events, history, outbox

__all__ = ["EventIngestion"]

_INGEST_ATTEMPTS = 5


class _VersionConflict(Exception):
    """Another writer saved the escalation first: roll back and read it again."""


class EventIngestion:
    """Mixed into ``SqlStore``: storing and applying TaskRouter events."""

    engine: AsyncEngine
    changes: ChangeFeed

    def _write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        raise NotImplementedError

    async def _load(self, connection: AsyncConnection, where: Any) -> Escalation | None:
        raise NotImplementedError

    async def _owner_of(
        self, connection: AsyncConnection, event: TaskRouterEvent
    ) -> Escalation | None:
        """The escalation an event concerns: by its task, else (adoption) by the escalation id
        its attributes carry, when that escalation has no task yet."""
        if event.task_sid is not None:
            found = await self._load(connection, escalations.c.task_sid == event.task_sid)
            if found is not None:
                return found
        if event.escalation_id is None:
            return None
        return await self._load(
            connection,
            sa.and_(escalations.c.id == event.escalation_id, escalations.c.task_sid.is_(None)),
        )

    def _insert_event(
        self, event: TaskRouterEvent, escalation_id: str, received_at: datetime
    ) -> Any:
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        return (
            insert(events)
            .values(
                key=event.key,
                event_type=event.event_type,
                escalation_id=escalation_id,
                task_sid=event.task_sid,
                reservation_sid=event.reservation_sid,
                worker_sid=event.worker_sid,
                reason=event.reason[:200] if event.reason else None,
                occurred_at=event.occurred_at,
                received_at=received_at,
            )
            .on_conflict_do_nothing(index_elements=["key"])
        )

    async def ingest_event(
        self, event: TaskRouterEvent, *, received_at: datetime, react: Reaction
    ) -> Ingested:
        """Store the event once and apply it, with its outbox rows, in one transaction."""
        for _ in range(_INGEST_ATTEMPTS):
            try:
                ingested = await self._ingest_once(event, received_at, react)
            except _VersionConflict:
                continue
            if ingested.after is not None and ingested.after is not ingested.before:
                self.changes.publish(ingested.after.id)
            return ingested
        raise StoreUnavailable("the escalation kept changing while an event was applied; retry")

    async def _ingest_once(
        self, event: TaskRouterEvent, received_at: datetime, react: Reaction
    ) -> Ingested:
        async with self._write() as connection:
            before = await self._owner_of(connection, event)
            if before is None:
                return Ingested(IngestResult.NOT_OURS)
            reaction = react(before)
            if reaction is None:
                return Ingested(IngestResult.IGNORED, before, before)
            inserted = await connection.execute(self._insert_event(event, before.id, received_at))
            if inserted.rowcount != 1:
                return Ingested(IngestResult.DUPLICATE, before, before)
            after, effects = reaction
            if after is not before:
                updated = await connection.execute(
                    sa.update(escalations)
                    .where(escalations.c.id == before.id, escalations.c.version == before.version)
                    .values(escalation_values(after))
                )
                if updated.rowcount != 1:
                    raise _VersionConflict()
                new_entries = after.history[len(before.history) :]
                if new_entries:
                    await connection.execute(
                        sa.insert(history), history_values(after.id, new_entries)
                    )
                await owe_status_callbacks(connection, before, after, received_at)
            for effect in effects:
                await connection.execute(
                    sa.insert(outbox).values(
                        escalation_id=before.id,
                        kind=RESET_WORKER,
                        due_at=received_at,
                        created_at=received_at,
                        payload=effect.payload(),
                    )
                )
            return Ingested(IngestResult.APPLIED, before, after, effects)
