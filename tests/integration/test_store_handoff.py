"""New create rows handed to the dispatcher as they are written, and completions committed
together: the store's side, on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import timedelta

import sqlalchemy as sa

from escalator.domain.escalation import Escalation, task_attached
from escalator.domain.ids import EscalationId, TaskSid, WorkerSid
from escalator.store import CREATE_TASK, Claim, IdempotencyKey, IdempotencyResult, OutboxItem
from escalator.store.schema import outbox
from escalator.store.sql import SqlStore, open_store
from tests.unit.factories import NOW, escalation

LEASE = timedelta(seconds=30)


@dataclass
class RecordingHandoff:
    """Stands in for the dispatcher: claims while it has room, records what it is given."""

    room: int
    owner: str = "here"
    taken: list[tuple[Claim, OutboxItem | None]] = field(default_factory=list)
    left: int = 0

    def claim(self) -> Claim | None:
        if self.room == 0:
            return None
        self.room -= 1
        return Claim(owner=self.owner, expires_at=NOW + LEASE, deadline=0.0)

    def take(self, claim: Claim, item: OutboxItem | None) -> None:
        self.taken.append((claim, item))

    def left_unleased(self) -> None:
        self.left += 1


def numbered(number: int, **fields: object) -> Escalation:
    """An escalation of its own conversation, with an id of its own."""
    value = escalation(conversation_id=f"conv-{number}", **fields)
    return replace(value, id=EscalationId(f"esc_{number:032x}"))


async def _leases(store: SqlStore) -> dict[str, str | None]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(sa.select(outbox.c.escalation_id, outbox.c.lease_owner))
        return {row.escalation_id: row.lease_owner for row in rows}


async def test_a_claimed_create_row_is_written_leased_and_handed_over_with_its_escalation(
    store: SqlStore,
) -> None:
    handoff = RecordingHandoff(room=5)
    store.hand_new_work_to(handoff)
    value, created = await store.create_escalation(numbered(1))

    assert created
    [(claim, item)] = handoff.taken
    assert item is not None
    assert (item.escalation_id, item.kind, item.ambiguous, item.attempts) == (
        value.id,
        CREATE_TASK,
        False,
        0,
    )
    assert item.escalation == value
    assert await _leases(store) == {value.id: "here"}
    # Leased: nobody else takes it meanwhile; the dispatcher it was handed to completes it.
    assert await store.lease_outbox(owner="other", now=NOW, lease_for=LEASE, limit=5) == []
    current = task_attached(value, TaskSid("WT" + "1" * 32), now=NOW)
    assert await store.complete_outbox(item, owner=claim.owner, previous=value, current=current)
    assert await store.get_escalation(value.id) == current
    assert await _leases(store) == {}


async def test_a_handed_over_row_whose_holder_died_is_taken_over_as_ambiguous(
    store: SqlStore,
) -> None:
    store.hand_new_work_to(RecordingHandoff(room=5))
    await store.create_escalation(numbered(1))
    later = NOW + LEASE + timedelta(seconds=1)
    [taken_over] = await store.lease_outbox(owner="other", now=later, lease_for=LEASE, limit=5)
    # The holder may have been creating the task: the new owner looks for it first.
    assert taken_over.ambiguous


async def test_without_room_the_row_is_written_unleased_and_leased_with_its_escalation(
    store: SqlStore,
) -> None:
    handoff = RecordingHandoff(room=1)
    store.hand_new_work_to(handoff)
    first, second = numbered(1), numbered(2)
    await asyncio.gather(store.create_escalation(first), store.create_escalation(second))

    assert [item is not None for _, item in handoff.taken] == [True]
    assert handoff.left == 1
    assert await _leases(store) == {first.id: "here", second.id: None}
    [item] = await store.lease_outbox(owner="here", now=NOW, lease_for=LEASE, limit=5)
    assert item.escalation_id == second.id
    assert item.escalation == second


async def test_a_claim_comes_back_when_the_conversation_already_has_an_open_escalation(
    store: SqlStore,
) -> None:
    first, _ = await store.create_escalation(numbered(1))
    handoff = RecordingHandoff(room=5)
    store.hand_new_work_to(handoff)
    got, created = await store.create_escalation(replace(numbered(2), conversation_id="conv-1"))

    assert (got.id, created) == (first.id, False)
    assert [item for _, item in handoff.taken] == [None]
    assert handoff.left == 0


async def test_a_keyed_create_is_handed_over_too(store: SqlStore) -> None:
    handoff = RecordingHandoff(room=5)
    store.hand_new_work_to(handoff)
    key = IdempotencyKey(
        scope="s", key="k", fingerprint="f", received_at=NOW, expires_at=NOW + LEASE
    )
    outcome = await store.create_escalation_with_key(numbered(1), key)

    assert (outcome.result, outcome.created) == (IdempotencyResult.NEW, True)
    [(_, item)] = handoff.taken
    assert item is not None
    assert item.escalation == outcome.escalation


async def test_completions_committed_together_are_each_decided_on_their_own(
    store: SqlStore,
) -> None:
    values = [(await store.create_escalation(numbered(n)))[0] for n in range(3)]
    items = await store.lease_outbox(owner="a", now=NOW, lease_for=LEASE, limit=5)
    by_id = {item.escalation_id: item for item in items}
    attached = [task_attached(v, TaskSid(f"WT{n:032d}"), now=NOW) for n, v in enumerate(values)]
    stale = replace(values[1], version=values[1].version + 5)

    done = await asyncio.gather(
        store.complete_outbox(
            by_id[values[0].id], owner="a", previous=values[0], current=attached[0]
        ),
        store.complete_outbox(
            by_id[values[1].id],
            owner="a",
            previous=stale,
            current=task_attached(stale, TaskSid("WT" + "9" * 32), now=NOW),
        ),
        store.complete_outbox(
            by_id[values[2].id], owner="b", previous=values[2], current=attached[2]
        ),
    )

    assert list(done) == [True, False, False]
    assert await store.get_escalation(values[0].id) == attached[0]
    assert await store.get_escalation(values[1].id) == values[1]
    assert await store.get_escalation(values[2].id) == values[2]
    assert await _leases(store) == {values[1].id: "a", values[2].id: "a"}


async def test_on_postgresql_a_failing_completion_fails_alone(postgres_url: str) -> None:
    store = await open_store(postgres_url)
    try:
        values = [(await store.create_escalation(numbered(n)))[0] for n in range(2)]
        items = await store.lease_outbox(owner="a", now=NOW, lease_for=LEASE, limit=5)
        by_id = {item.escalation_id: item for item in items}
        good = task_attached(values[0], TaskSid("WT" + "1" * 32), now=NOW)
        # worker_name is VARCHAR(256): PostgreSQL refuses the longer one, and its batch with it.
        bad = replace(
            task_attached(values[1], TaskSid("WT" + "2" * 32), now=NOW),
            worker_sid=WorkerSid("WK" + "1" * 32),
            worker_name="x" * 300,
        )
        done = await asyncio.gather(
            store.complete_outbox(by_id[values[0].id], owner="a", previous=values[0], current=good),
            store.complete_outbox(by_id[values[1].id], owner="a", previous=values[1], current=bad),
            return_exceptions=True,
        )
        assert done[0] is True
        assert isinstance(done[1], sa.exc.DBAPIError)
        assert await store.get_escalation(values[0].id) == good
        assert await store.get_escalation(values[1].id) == values[1]
    finally:
        await store.close()
