"""The store's reporting queries on SQLite and PostgreSQL: keyset pages, cancels, callbacks owed."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from escalator.domain.changes import cancel_for_client, client_canceled
from escalator.domain.escalation import Escalation, Status, task_attached
from escalator.domain.ids import EscalationId, TaskSid
from escalator.store import CANCEL_TASK, CREATE_TASK, STATUS_CALLBACK
from escalator.store.sql import SqlStore
from tests.unit.factories import NOW, escalation


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
    await _cancel(store, made[1].id)
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
    _, after = await _cancel(store, item.id)
    # The create may reach TaskRouter: the cancel waits for its answer or for a lookup.
    assert (after.status, after.cancel_requested) == (Status.RECEIVED, True)
    assert await store.outbox_backlog_by_kind() == {CREATE_TASK: 1, CANCEL_TASK: 1}
    [cancel] = await store.lease_outbox(
        owner="t",
        now=NOW + timedelta(seconds=31),
        lease_for=timedelta(seconds=30),
        limit=10,
        kinds=[CANCEL_TASK],
    )
    assert cancel.payload == {"find": True}
    assert cancel.due_at == NOW + timedelta(seconds=30)  # when the create's lease ends


async def test_a_change_owes_one_status_callback_per_status_change(store: SqlStore) -> None:
    item = _new(1, seconds=0, status_callback_url="https://agent.example.com/hook")
    await store.create_escalation(item)
    [lease] = await store.lease_outbox(
        owner="t", now=NOW, lease_for=timedelta(seconds=30), limit=10
    )
    queued = task_attached(item, TaskSid("WT" + "1" * 32), now=NOW)
    assert await store.complete_outbox(lease, owner="t", previous=item, current=queued)
    # The cancel waits for TaskRouter (no status change yet), then TaskRouter's answer settles it.
    await _cancel(store, item.id)
    assert await store.outbox_backlog_by_kind() == {STATUS_CALLBACK: 1, CANCEL_TASK: 1}
    [cancel] = await store.lease_outbox(
        owner="t", now=NOW, lease_for=timedelta(seconds=30), limit=10, kinds=[CANCEL_TASK]
    )
    assert await store.record_outbox_result(
        cancel, owner="t", change=lambda e: client_canceled(e, now=NOW)
    )
    rows = await store.lease_outbox(
        owner="t", now=NOW, lease_for=timedelta(seconds=30), limit=10, kinds=[STATUS_CALLBACK]
    )
    bodies = [row.payload["body"] for row in rows if row.payload]
    assert [(b["status"], b["sequence"]) for b in bodies] == [("queued", 2), ("canceled", 4)]
    assert [b["delivery_id"] for b in bodies] == [f"{item.id}.2", f"{item.id}.4"]


async def _cancel(store: SqlStore, escalation_id: EscalationId) -> tuple[Escalation, Escalation]:
    def cancel(escalation: Escalation, task_may_exist: bool) -> Escalation:
        return cancel_for_client(escalation, now=NOW, task_may_exist=task_may_exist)

    result = await store.cancel_escalation(escalation_id, now=NOW, cancel=cancel)
    assert result is not None
    return result
