"""The store's reporting queries on SQLite and PostgreSQL: keyset pages, cancels, callbacks owed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest

from escalator.domain.changes import client_canceled
from escalator.domain.escalation import Escalation, Status, task_attached
from escalator.domain.ids import EscalationId, TaskSid
from escalator.store import CANCEL_TASK, CREATE_TASK, STATUS_CALLBACK
from escalator.store.sql import SqlStore, open_store
from tests.unit.factories import NOW, escalation


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    opened = await open_store(database_url)
    try:
        yield opened
    finally:
        await opened.close()


def _new(number: int, *, seconds: int, **fields: object) -> Escalation:
    value = escalation(conversation_id=f"conv-{number % 3}-{number}", **fields)
    moment = NOW + timedelta(seconds=seconds)
    return replace(
        value,
        id=EscalationId(f"esc_{number:032x}"),
        created_at=moment,
        updated_at=moment,
        history=tuple(replace(entry, at=moment) for entry in value.history),
    )


async def test_pages_follow_created_at_then_id_without_gaps_or_repeats(store: SqlStore) -> None:
    # Several escalations share a creation instant: the id breaks the tie.
    made = [_new(n, seconds=n // 3) for n in range(10)]
    for item in reversed(made):
        await store.create_escalation(item)
    seen, after = [], None
    while True:
        page = await store.list_escalations(conversation_id=None, statuses=(), after=after, limit=4)
        seen.append([item.id for item in page])
        if len(page) < 4:
            break
        after = (page[-1].created_at, page[-1].id)
    assert [i for page in seen for i in page] == [item.id for item in made]
    assert [len(page) for page in seen] == [4, 4, 2]
    assert all(
        item.history
        for page in [
            await store.list_escalations(conversation_id=None, statuses=(), after=None, limit=10)
        ]
        for item in page
    )


async def test_filters_by_conversation_and_statuses(store: SqlStore) -> None:
    made = [_new(n, seconds=n) for n in range(6)]
    for item in made:
        await store.create_escalation(item)
    result = await store.cancel_escalation(
        made[1].id, now=NOW, cancel=lambda e: client_canceled(e, now=NOW)
    )
    assert result is not None
    ids = [
        item.id
        for item in await store.list_escalations(
            conversation_id="conv-1-1", statuses=(), after=None, limit=10
        )
    ]
    assert ids == [made[1].id]
    canceled = await store.list_escalations(
        conversation_id=None, statuses=(Status.CANCELED, Status.COMPLETED), after=None, limit=10
    )
    assert [item.id for item in canceled] == [made[1].id]
    received = await store.list_escalations(
        conversation_id=None, statuses=(Status.RECEIVED,), after=None, limit=10
    )
    assert len(received) == 5


async def test_canceling_without_a_task_drops_the_create_row(store: SqlStore) -> None:
    item = _new(1, seconds=0, status_callback_url="https://agent.example.com/hook")
    await store.create_escalation(item)
    before, after = await _cancel(store, item.id)
    assert after.status is Status.CANCELED
    # The cancel is the one change reported (`received` is the POST's own answer).
    assert await store.outbox_backlog_by_kind() == {STATUS_CALLBACK: 1}
    leased = await store.lease_outbox(
        owner="t",
        now=NOW + timedelta(hours=1),
        lease_for=timedelta(seconds=30),
        limit=10,
        kinds=[CREATE_TASK, CANCEL_TASK],
    )
    assert leased == []
    assert before.version + 1 == after.version


async def test_canceling_while_a_create_is_leased_owes_a_find_and_cancel(store: SqlStore) -> None:
    item = _new(1, seconds=0)
    await store.create_escalation(item)
    [lease] = await store.lease_outbox(
        owner="t", now=NOW, lease_for=timedelta(seconds=30), limit=10
    )
    assert lease.kind == CREATE_TASK
    await _cancel(store, item.id)
    assert await store.outbox_backlog_by_kind() == {CREATE_TASK: 1, CANCEL_TASK: 1}


async def test_a_change_owes_one_status_callback_per_status_change(store: SqlStore) -> None:
    item = _new(1, seconds=0, status_callback_url="https://agent.example.com/hook")
    await store.create_escalation(item)
    [lease] = await store.lease_outbox(
        owner="t", now=NOW, lease_for=timedelta(seconds=30), limit=10
    )
    queued = task_attached(item, TaskSid("WT" + "1" * 32), now=NOW)
    assert await store.complete_outbox(lease, owner="t", previous=item, current=queued)
    await _cancel(store, item.id)
    assert await store.outbox_backlog_by_kind() == {STATUS_CALLBACK: 2, CANCEL_TASK: 1}
    rows = await store.lease_outbox(
        owner="t", now=NOW, lease_for=timedelta(seconds=30), limit=10, kinds=[STATUS_CALLBACK]
    )
    bodies = [row.payload["body"] for row in rows if row.payload]
    assert [(b["status"], b["sequence"]) for b in bodies] == [("queued", 2), ("canceled", 3)]
    assert [b["delivery_id"] for b in bodies] == [f"{item.id}.2", f"{item.id}.3"]


async def _cancel(store: SqlStore, escalation_id: EscalationId) -> tuple[Escalation, Escalation]:
    result = await store.cancel_escalation(
        escalation_id, now=NOW, cancel=lambda e: client_canceled(e, now=NOW)
    )
    assert result is not None
    return result
