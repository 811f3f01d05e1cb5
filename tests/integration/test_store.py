"""The store contract, run against a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import exc as sa_exc

from escalator.domain.changes import cancel_for_client
from escalator.domain.effects import side_effects
from escalator.domain.escalation import Escalation, TwilioFailure, task_attached, task_refused
from escalator.domain.events import TaskRouterEvent, apply_event
from escalator.domain.ids import EscalationId, ReservationSid, TaskSid, WorkerSid
from escalator.errors import StoreUnavailable
from escalator.routing import CascadeSpec
from escalator.store import RESET_WORKER, IdempotencyKey, IdempotencyResult, IngestResult
from escalator.store.engine import create_engine
from escalator.store.schema import escalations, metadata, outbox
from escalator.store.sql import SqlStore, open_store
from tests.unit.factories import NOW, escalation

LEASE = timedelta(seconds=30)
TASK = TaskSid("WT" + "1" * 32)
RES = ReservationSid("WR" + "1" * 32)
WK = WorkerSid("WK" + "1" * 32)


def _new(number: int, **fields: object) -> Escalation:
    value = escalation(conversation_id=f"conv-{number}", **fields)
    return replace(value, id=EscalationId(f"esc_{number:032x}"))


async def test_migrations_match_the_table_definitions(store: SqlStore) -> None:
    def diff(connection: sa.Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))

    async with store.engine.connect() as connection:
        assert await connection.run_sync(diff) == []
    assert await store.schema_is_current()


async def test_migrating_twice_is_a_no_op(database_url: str, store: SqlStore) -> None:
    again = await open_store(database_url)
    await again.close()
    assert await store.schema_is_current()


async def test_the_schema_serves_at_head_and_at_a_newer_revision_but_not_an_older_one(
    store: SqlStore,
) -> None:
    async def stamp(revision: str) -> None:
        async with store.engine.begin() as connection:
            await connection.execute(
                sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision}
            )

    await stamp("9999_from_a_newer_release")  # its migrate Job ran before this pod went away
    assert await store.schema_is_current()
    await stamp("0001")
    assert not await store.schema_is_current()


async def test_an_escalation_is_stored_with_its_history_and_an_outbox_row(store: SqlStore) -> None:
    value = _new(1, customer={"phone": "+15558675310"}, context={"a-b": [1, {"c": None}]})
    stored, created = await store.create_escalation(value)
    assert created
    assert stored == value
    assert await store.get_escalation(value.id) == value
    assert await store.outbox_backlog() == 1


async def test_a_second_escalation_for_an_open_conversation_returns_the_first(
    store: SqlStore,
) -> None:
    first, _ = await store.create_escalation(_new(1))
    second = replace(_new(2), conversation_id=first.conversation_id)
    got, created = await store.create_escalation(second)
    assert not created
    assert got.id == first.id
    assert await store.get_escalation(second.id) is None
    assert await store.outbox_backlog() == 1


async def test_concurrent_escalations_for_one_conversation_create_one(store: SqlStore) -> None:
    candidates = [replace(_new(n), conversation_id="same") for n in range(8)]
    results = await asyncio.gather(*(store.create_escalation(c) for c in candidates))
    assert sum(created for _, created in results) == 1
    assert len({got.id for got, _ in results}) == 1
    assert await store.outbox_backlog() == 1


async def test_a_closed_conversation_can_escalate_again(store: SqlStore) -> None:
    first, _ = await store.create_escalation(_new(1))
    [item] = await store.lease_outbox(owner="a", now=NOW, lease_for=LEASE, limit=5)
    failed = task_refused(first, TwilioFailure(400, 20001, "no"), now=NOW)
    assert await store.complete_outbox(item, owner="a", previous=first, current=failed)
    second = replace(_new(2), conversation_id=first.conversation_id)
    _, created = await store.create_escalation(second)
    assert created


async def test_leases_are_exclusive_until_they_expire(store: SqlStore) -> None:
    for number in range(3):
        await store.create_escalation(_new(number))
    leased = await store.lease_outbox(owner="a", now=NOW, lease_for=LEASE, limit=2)
    assert len(leased) == 2
    assert not any(item.ambiguous for item in leased)
    rest = await store.lease_outbox(owner="b", now=NOW, lease_for=LEASE, limit=5)
    assert len(rest) == 1
    assert await store.lease_outbox(owner="b", now=NOW, lease_for=LEASE, limit=5) == []
    later = NOW + LEASE + timedelta(seconds=1)
    taken_over = await store.lease_outbox(owner="b", now=later, lease_for=LEASE, limit=5)
    assert len(taken_over) == 3
    # The holder may have died mid-request: the new owner must look before creating.
    assert all(item.ambiguous for item in taken_over)


async def test_rows_not_yet_due_are_not_leased(store: SqlStore) -> None:
    await store.create_escalation(_new(1))
    assert (
        await store.lease_outbox(
            owner="a", now=NOW - timedelta(seconds=1), lease_for=LEASE, limit=5
        )
        == []
    )


async def test_completing_saves_the_state_and_drops_the_row(store: SqlStore) -> None:
    value, _ = await store.create_escalation(_new(1))
    [item] = await store.lease_outbox(owner="a", now=NOW, lease_for=LEASE, limit=5)
    queued = task_attached(value, TaskSid("WT" + "1" * 32), now=NOW + timedelta(seconds=1))
    assert await store.complete_outbox(item, owner="a", previous=value, current=queued)
    assert await store.get_escalation(value.id) == queued
    assert await store.outbox_backlog() == 0


async def test_completing_without_the_lease_changes_nothing(store: SqlStore) -> None:
    value, _ = await store.create_escalation(_new(1))
    [item] = await store.lease_outbox(owner="a", now=NOW, lease_for=LEASE, limit=5)
    queued = task_attached(value, TaskSid("WT" + "1" * 32), now=NOW)
    assert not await store.complete_outbox(item, owner="b", previous=value, current=queued)
    assert (await store.get_escalation(value.id)) == value


async def test_a_stale_version_is_refused_and_the_row_kept(store: SqlStore) -> None:
    value, _ = await store.create_escalation(_new(1))
    [item] = await store.lease_outbox(owner="a", now=NOW, lease_for=LEASE, limit=5)
    stale = replace(value, version=value.version + 5)
    queued = task_attached(stale, TaskSid("WT" + "1" * 32), now=NOW)
    assert not await store.complete_outbox(item, owner="a", previous=stale, current=queued)
    assert await store.outbox_backlog() == 1


async def test_a_retried_row_comes_back_when_due_and_remembers_ambiguity(store: SqlStore) -> None:
    await store.create_escalation(_new(1))
    [item] = await store.lease_outbox(owner="a", now=NOW, lease_for=LEASE, limit=5)
    due = NOW + timedelta(seconds=10)
    await store.retry_outbox(item, owner="a", due_at=due, error="503", ambiguous=True)
    assert await store.lease_outbox(owner="a", now=NOW, lease_for=LEASE, limit=5) == []
    [again] = await store.lease_outbox(owner="a", now=due, lease_for=LEASE, limit=5)
    assert again.attempts == 1
    assert again.ambiguous


async def test_released_leases_are_taken_at_once_and_marked_ambiguous(store: SqlStore) -> None:
    await store.create_escalation(_new(1))
    await store.lease_outbox(owner="a", now=NOW, lease_for=LEASE, limit=5)
    assert await store.release_leases(owner="a") == 1
    [item] = await store.lease_outbox(owner="b", now=NOW, lease_for=LEASE, limit=5)
    assert item.ambiguous


async def test_an_unreachable_database_raises_store_unavailable() -> None:
    store = SqlStore(create_engine("postgresql://nobody@127.0.0.1:1/none"))
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
    finally:
        await store.close()


async def test_sqlite_is_in_wal_mode_with_full_synchronous_commits(sqlite_url: str) -> None:
    store = await open_store(sqlite_url)
    try:
        async with store.engine.connect() as connection:
            assert await connection.scalar(sa.text("PRAGMA journal_mode")) == "wal"
            assert await connection.scalar(sa.text("PRAGMA synchronous")) == 2  # FULL
            assert await connection.scalar(sa.text("PRAGMA busy_timeout")) == 5000
    finally:
        await store.close()


def _event(key: str, event_type: str, **fields: Any) -> TaskRouterEvent:
    return TaskRouterEvent(key=key, event_type=event_type, occurred_at=NOW, **fields)


def _react(escalation: Escalation, event: TaskRouterEvent) -> Any:
    after = apply_event(escalation, event)
    return after, side_effects(escalation, after, event, CascadeSpec())


async def _queued(store: SqlStore) -> Escalation:
    value, _ = await store.create_escalation(_new(1))
    [item] = await store.lease_outbox(owner="a", now=NOW, lease_for=LEASE, limit=5)
    queued = task_attached(value, TASK, now=NOW)
    assert await store.complete_outbox(item, owner="a", previous=value, current=queued)
    return queued


async def test_an_event_is_stored_once_and_applied_with_its_side_effects(store: SqlStore) -> None:
    queued = await _queued(store)
    created = _event("k1", "reservation.created", task_sid=TASK, reservation_sid=RES, worker_sid=WK)
    timeout = _event("k2", "reservation.timeout", task_sid=TASK, reservation_sid=RES, worker_sid=WK)
    for event in (created, timeout, timeout):
        await store.ingest_event(event, received_at=NOW, react=lambda e, ev=event: _react(e, ev))
    stored = await store.get_escalation(queued.id)
    assert stored is not None
    assert [entry.event for entry in stored.history][-2:] == [
        "reservation.created",
        "reservation.timeout",
    ]
    [reset] = await store.lease_outbox(owner="a", now=NOW, lease_for=LEASE, limit=5)
    assert (reset.kind, reset.payload) == (
        RESET_WORKER,
        {"worker_sid": WK, "activity": "Available", "reservation_sid": RES},
    )
    assert await store.drop_outbox(reset, owner="a")
    assert await store.outbox_backlog() == 0


async def test_concurrent_deliveries_of_events_are_each_applied_once(store: SqlStore) -> None:
    queued = await _queued(store)
    batch = [
        _event(f"k{n}", "reservation.created", task_sid=TASK, reservation_sid=f"WR{n:032d}")
        for n in range(5)
    ]
    results = await asyncio.gather(
        *(
            store.ingest_event(event, received_at=NOW, react=lambda e, ev=event: _react(e, ev))
            for event in batch + batch
        )
    )
    assert sorted(r.result.value for r in results) == ["applied"] * 5 + ["duplicate"] * 5
    stored = await store.get_escalation(queued.id)
    assert stored is not None
    assert len(stored.history) == len(queued.history) + 5


async def test_events_committed_together_apply_in_arrival_order_on_each_others_result(
    store: SqlStore,
) -> None:
    value, _ = await store.create_escalation(_new(1))
    arriving = [
        _event("k1", "task.created", task_sid=TASK, escalation_id=value.id),
        _event("k2", "reservation.created", task_sid=TASK, reservation_sid=RES, worker_sid=WK),
        _event("k3", "reservation.accepted", task_sid=TASK, reservation_sid=RES, worker_sid=WK),
        _event("k2", "reservation.created", task_sid=TASK, reservation_sid=RES, worker_sid=WK),
    ]
    results = await asyncio.gather(
        *(
            store.ingest_event(event, received_at=NOW, react=lambda e, ev=event: _react(e, ev))
            for event in arriving
        )
    )

    assert [r.result for r in results] == [IngestResult.APPLIED] * 3 + [IngestResult.DUPLICATE]
    stored = await store.get_escalation(value.id)
    assert stored is not None
    assert (stored.task_sid, stored.worker_sid, stored.version) == (TASK, WK, value.version + 3)
    assert [entry.event for entry in stored.history][-3:] == [
        "task.created",
        "reservation.created",
        "reservation.accepted",
    ]


def _key(key: str, fingerprint: str, *, at: datetime = NOW) -> IdempotencyKey:
    return IdempotencyKey(
        scope="s", key=key, fingerprint=fingerprint, received_at=at, expires_at=at + LEASE
    )


async def test_on_sqlite_creates_committed_together_are_decided_in_arrival_order(
    sqlite_url: str,
) -> None:
    # PostgreSQL runs them as concurrent transactions, in an order of its own.
    store = await open_store(sqlite_url)
    first, same_conversation = _new(1), replace(_new(2), conversation_id="conv-1")
    keyed, other = _new(3), _new(4)
    results = await asyncio.gather(
        store.create_escalation_with_key(first, _key("k1", "f1")),
        store.create_escalation(same_conversation),
        store.create_escalation_with_key(keyed, _key("k1", "f1")),
        store.create_escalation_with_key(other, _key("k1", "another body")),
        store.create_escalation_with_key(other, _key("k4", "f4")),
    )

    assert [(r.result, r.escalation and r.escalation.id, r.created) for r in results[2:]] == [
        (IdempotencyResult.REPLAYED, first.id, False),
        (IdempotencyResult.MISMATCH, None, False),
        (IdempotencyResult.NEW, other.id, True),
    ]
    assert (results[0].result, results[0].created) == (IdempotencyResult.NEW, True)
    assert results[1] == (results[0].escalation, False)  # the conversation's open one
    async with store.engine.connect() as connection:
        assert await connection.scalar(sa.select(sa.func.count()).select_from(escalations)) == 2
        assert await connection.scalar(sa.select(sa.func.count()).select_from(outbox)) == 2
    await store.close()


async def test_an_expired_key_is_claimed_again_for_a_new_request(store: SqlStore) -> None:
    await store.create_escalation_with_key(_new(1), _key("k", "first body"))
    later = NOW + LEASE + timedelta(seconds=1)

    again = await store.create_escalation_with_key(_new(2), _key("k", "other body", at=later))

    assert (again.result, again.created) == (IdempotencyResult.NEW, True)
    replay = await store.create_escalation_with_key(_new(3), _key("k", "other body", at=later))
    assert (replay.result, replay.escalation and replay.escalation.id) == (
        IdempotencyResult.REPLAYED,
        _new(2).id,
    )


async def test_an_event_adopts_its_escalation_by_id_or_is_not_ours(store: SqlStore) -> None:
    value, _ = await store.create_escalation(_new(1))
    adopt = _event("k1", "task.created", task_sid=TASK, escalation_id=value.id)
    ingested = await store.ingest_event(adopt, received_at=NOW, react=lambda e: _react(e, adopt))
    assert ingested.result is IngestResult.APPLIED
    stored = await store.get_escalation(value.id)
    assert stored is not None
    assert stored.task_sid == TASK
    stranger = _event("k2", "task.canceled", task_sid=TaskSid("WT" + "8" * 32))
    result = await store.ingest_event(stranger, received_at=NOW, react=lambda e: None)
    assert result.result is IngestResult.NOT_OURS


async def test_a_driver_error_does_not_carry_the_customer_content(postgres_url: str) -> None:
    store = await open_store(postgres_url)
    try:
        # Bypass the request model: PostgreSQL refuses NUL in text with a DataError.
        poisoned = replace(_new(1), summary="my card 4111 was stolen\x00", context={"k": "v"})
        with pytest.raises(sa_exc.DBAPIError) as raised:
            await store.create_escalation(poisoned)
        assert "stolen" not in str(raised.value)
    finally:
        await store.close()


async def test_only_the_kinds_asked_for_are_leased(store: SqlStore) -> None:
    await store.create_escalation(_new(1))
    assert (
        await store.lease_outbox(
            owner="old", now=NOW, lease_for=LEASE, limit=5, kinds={"reset_worker"}
        )
        == []
    )
    assert len(await store.lease_outbox(owner="new", now=NOW, lease_for=LEASE, limit=5)) == 1


async def test_an_event_sees_every_change_made_since_its_escalation_was_last_decoded(
    database_url: str, store: SqlStore
) -> None:
    """The escalations events decode are reused only at the version they were committed at: a
    change by another path, or by another process on the same database, is read again."""
    queued = await _queued(store)
    created = _event("k1", "reservation.created", task_sid=TASK, reservation_sid=RES, worker_sid=WK)
    await store.ingest_event(created, received_at=NOW, react=lambda e: _react(e, created))
    # Another process's store changes it (a client cancel waits for TaskRouter's answer).
    other = await open_store(database_url, run_migrations=False)
    try:
        result = await other.cancel_escalation(
            queued.id,
            now=NOW,
            cancel=lambda e, may_exist: cancel_for_client(e, now=NOW, task_may_exist=may_exist),
        )
        assert result is not None
        assert result[1].cancel_requested
    finally:
        await other.close()
    rejected = _event("k2", "reservation.rejected", task_sid=TASK, reservation_sid=RES)
    ingested = await store.ingest_event(
        rejected, received_at=NOW, react=lambda e: _react(e, rejected)
    )
    assert ingested.before is not None
    assert ingested.before.cancel_requested
    stored = await store.get_escalation(queued.id)
    assert stored is not None
    assert [entry.event for entry in stored.history][-3:] == [
        "reservation.created",
        "escalation.cancel_requested",
        "reservation.rejected",
    ]
