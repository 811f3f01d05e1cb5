"""The store's side of TaskRouter events: each stored once and applied, in group commits.

Events arrive in bursts (a reservation's created, accepted and the task's updates come within
milliseconds, for many tasks at once), and each must be durable before TaskRouter gets its 204.
Events that arrive together are applied as one set: a few reads for the whole batch (their
escalations' ids and versions, the rows and history of those not decoded lately (recent.py),
which events are already stored), the state machine in memory in arrival order, then one
insert per table and one update per escalation, in one transaction and one commit. Statements
are built once, with bind parameters, so SQLAlchemy compiles each a single time.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from escalator.domain.escalation import Escalation
from escalator.domain.events import TaskRouterEvent
from escalator.errors import StoreUnavailable
from escalator.store import RESET_WORKER, Ingested, IngestResult, Reaction
from escalator.store.connections import StoreConnections
from escalator.store.group_commit import GroupCommit
from escalator.store.plans import Plan, Step, run_in_thread, run_on_loop
from escalator.store.recent import RecentEscalations
from escalator.store.reporting import status_callback_rows
from escalator.store.rows import escalations_by_id, history_values, state_values
from escalator.store.schema import escalations, events, history, outbox

__all__ = ["MAX_EVENT_BATCH", "RECENT_ESCALATIONS", "EventIngestion", "PendingEvent"]

_INGEST_ATTEMPTS = 5
# Events per transaction: enough to amortise a commit, few enough to keep each IN list short.
MAX_EVENT_BATCH = 100
# Escalations kept decoded between batches (recent.py), the default of the setting: a task's
# events come seconds apart, with other tasks' events between them; 2,048 escalations take a
# few MiB (about 4 KiB each with a short summary and history).
RECENT_ESCALATIONS = 2048

# The escalations a batch of events concerns: by task, or (adoption) by the escalation id an
# event's attributes carry when that escalation has no task yet.
# Their ids and versions first: most are decoded already (recent.py), and a whole row costs
# more to decode (its JSON columns) than the key that finds the decoded one.
_OWNERS = sa.select(escalations.c.id, escalations.c.version).where(
    sa.or_(
        escalations.c.task_sid.in_(sa.bindparam("task_sids", expanding=True)),
        sa.and_(
            escalations.c.id.in_(sa.bindparam("ids", expanding=True)),
            escalations.c.task_sid.is_(None),
        ),
    )
)
_STORED_KEYS = sa.select(events.c.key).where(events.c.key.in_(sa.bindparam("keys", expanding=True)))
_SAVE_STATE = sa.update(escalations).where(
    escalations.c.id == sa.bindparam("saved_id"),
    escalations.c.version == sa.bindparam("saved_version"),
)


class _Conflict(Exception):
    """Another writer (another replica, on PostgreSQL) got there first: read again and redo."""


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event waiting for its batch: what happened, when it arrived, what it does."""

    event: TaskRouterEvent
    received_at: datetime
    react: Reaction


@dataclass(slots=True)
class _Batch:
    """A batch being applied in memory: the escalations as they stand, and the rows owed."""

    current: dict[str, Escalation]
    loaded_version: dict[str, int]
    by_task: dict[str, str]
    stored_keys: set[str]
    event_rows: list[dict[str, Any]] = field(default_factory=list)
    history_rows: list[dict[str, Any]] = field(default_factory=list)
    outbox_rows: list[dict[str, Any]] = field(default_factory=list)

    def owner(self, event: TaskRouterEvent) -> Escalation | None:
        if event.task_sid is not None and event.task_sid in self.by_task:
            return self.current[self.by_task[event.task_sid]]
        found = self.current.get(event.escalation_id or "")
        return found if found is not None and found.task_sid is None else None

    def apply(self, pending: PendingEvent) -> Ingested:
        event = pending.event
        before = self.owner(event)
        if before is None:
            return Ingested(IngestResult.NOT_OURS)
        reaction = pending.react(before)
        if reaction is None:
            return Ingested(IngestResult.IGNORED, before, before)
        if event.key in self.stored_keys:
            return Ingested(IngestResult.DUPLICATE, before, before)
        self.stored_keys.add(event.key)
        self.event_rows.append(_event_row(event, before.id, pending.received_at))
        after, effects = reaction
        if after is not before:
            self.current[after.id] = after
            if after.task_sid is not None:
                self.by_task[after.task_sid] = after.id
            self.history_rows += history_values(after.id, after.history[len(before.history) :])
            self.outbox_rows += status_callback_rows(before, after, pending.received_at)
        self.outbox_rows += [
            {
                "escalation_id": before.id,
                "kind": RESET_WORKER,
                "due_at": pending.received_at,
                "created_at": pending.received_at,
                "payload": effect.payload(),
            }
            for effect in effects
        ]
        return Ingested(IngestResult.APPLIED, before, after, effects)

    def saved_states(self) -> list[dict[str, Any]]:
        return [
            {"saved_id": escalation_id, "saved_version": version, **state_values(after)}
            # In the order of their ids, as completions lock them (completes.py): PostgreSQL
            # transactions that lock rows in one order never wait on each other in a cycle.
            for escalation_id, version in sorted(self.loaded_version.items())
            if (after := self.current[escalation_id]).version != version
        ]


def _event_row(event: TaskRouterEvent, escalation_id: str, received_at: datetime) -> dict[str, Any]:
    return {
        "key": event.key,
        "event_type": event.event_type,
        "escalation_id": escalation_id,
        "task_sid": event.task_sid,
        "reservation_sid": event.reservation_sid,
        "worker_sid": event.worker_sid,
        "reason": event.reason[:200] if event.reason else None,
        "occurred_at": event.occurred_at,
        "received_at": received_at,
    }


# A batch's statements as a plan (plans.py): one serves both kinds of connection.
_Plan = Plan[list[Ingested | Exception]]


def _escalations(
    rows: Sequence[Any], recent: RecentEscalations
) -> Generator[Step, Any, dict[str, Escalation]]:
    """The escalations of these (id, version) rows: the recent ones as they are, the others
    read whole with their history (two statements for all of them)."""
    current: dict[str, Escalation] = {}
    for row in rows:
        if (known := recent.get(row["id"], row["version"])) is not None:
            current[row["id"]] = known
    missing = [row["id"] for row in rows if row["id"] not in current]
    current.update((yield from escalations_by_id(missing)))
    return current


def _plan(
    batch: Sequence[PendingEvent], *, sums_rowcounts: bool, recent: RecentEscalations
) -> _Plan:
    task_sids = sorted({p.event.task_sid for p in batch if p.event.task_sid is not None})
    ids = sorted({p.event.escalation_id for p in batch if p.event.escalation_id is not None})
    rows = yield Step(_OWNERS, {"task_sids": task_sids, "ids": ids}, reads=True)
    current = yield from _escalations(rows, recent)
    keys = sorted({p.event.key for p in batch})
    stored = yield Step(_STORED_KEYS, {"keys": keys}, reads=True)
    state = _Batch(
        current=current,
        loaded_version={key: e.version for key, e in current.items()},
        by_task={e.task_sid: key for key, e in current.items() if e.task_sid},
        stored_keys={row["key"] for row in stored},
    )
    results: list[Ingested | Exception] = []
    for pending in batch:
        try:
            results.append(state.apply(pending))
        except Exception as exc:  # a bug in one event's reaction fails that event alone
            results.append(exc)
    if state.event_rows:
        yield Step(sa.insert(events), state.event_rows)
    saved = state.saved_states()
    if saved and sums_rowcounts:
        # One executemany: its rowcount is the sum, so a lost version check still shows.
        if (yield Step(_SAVE_STATE, saved)) != len(saved):
            raise _Conflict()
    else:
        for values in saved:
            if (yield Step(_SAVE_STATE, values)) != 1:
                raise _Conflict()
    if state.history_rows:
        yield Step(sa.insert(history), state.history_rows)
    if state.outbox_rows:
        yield Step(sa.insert(outbox), state.outbox_rows)
    return results


class EventIngestion(StoreConnections):
    """Mixed into ``SqlStore``: storing and applying TaskRouter events."""

    _event_batches: GroupCommit[PendingEvent, Ingested]
    _recent: RecentEscalations

    async def ingest_event(
        self, event: TaskRouterEvent, *, received_at: datetime, react: Reaction
    ) -> Ingested:
        """Store the event once and apply it, with its outbox rows; return once committed."""
        return await self._event_batches.submit(PendingEvent(event, received_at, react))

    async def _ingest_batch(self, batch: Sequence[PendingEvent]) -> list[Ingested | Exception]:
        for _ in range(_INGEST_ATTEMPTS):
            try:
                results = await self._apply(batch)
            except _Conflict:
                continue
            # Committed: each escalation as the batch's last event left it.
            committed = {
                result.after.id: result.after
                for result in results
                if isinstance(result, Ingested) and result.after is not None
            }
            self._recent.remember(committed.values())
            changed = {
                result.after.id
                for result in results
                if isinstance(result, Ingested)
                and result.after is not None
                and result.after is not result.before
            }
            for escalation_id in sorted(changed):
                self.changes.publish(escalation_id)
            return results
        raise StoreUnavailable("the escalations kept changing while events were applied; retry")

    async def _apply(self, batch: Sequence[PendingEvent]) -> list[Ingested | Exception]:
        try:
            if self._thread_engine is not None:
                # SQLite: the whole batch in one hop to a worker thread. Through aiosqlite each
                # statement is a hop there and back, and each hop back waits for the event loop
                # to finish what it is doing (parsing the next callbacks): under load that wait,
                # times a dozen statements, not SQLite, is what a batch costs.
                plan = _plan(batch, sums_rowcounts=True, recent=self._recent)
                return await self._write_in_thread(partial(run_in_thread, plan))
            async with self._write() as connection:
                sums = connection.dialect.supports_sane_multi_rowcount
                plan = _plan(batch, sums_rowcounts=sums, recent=self._recent)
                return await run_on_loop(plan, connection)
        except sa_exc.IntegrityError:
            # Another replica stored one of these events first (PostgreSQL): read again.
            raise _Conflict() from None
