"""Outbox rows completed in group commits: the new state saved and the row dropped.

A dispatcher finishes rows one after the other, milliseconds apart, and each completion must be
durable before the next step. On SQLite, completions that are ready together share one
transaction, run whole on the writer thread (one hop there and back, one commit), in the order
they came; each is decided as if alone. PostgreSQL runs the same statements, one transaction
per completion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from escalator.domain.escalation import Escalation
from escalator.domain.ids import TaskSid
from escalator.store import CANCEL_TASK, OutboxItem
from escalator.store.plans import Plan, Step
from escalator.store.reporting import status_callback_rows
from escalator.store.rows import history_values, state_values
from escalator.store.schema import escalations, history, outbox

__all__ = ["MAX_COMPLETE_BATCH", "Completion", "LostLease", "complete_plan"]

# Completions per transaction: a dispatcher holds a few dozen rows at most.
MAX_COMPLETE_BATCH = 100

# The new state, saved only over the version it was made from, and only while the row is
# still leased to the caller (so that a lost lease writes nothing).
_SAVE_IF_LEASED = sa.update(escalations).where(
    escalations.c.id == sa.bindparam("saved_id"),
    escalations.c.version == sa.bindparam("saved_version"),
    sa.exists().where(
        outbox.c.id == sa.bindparam("outbox_id"),
        outbox.c.lease_owner == sa.bindparam("owner"),
    ),
)
_DROP = sa.delete(outbox).where(
    outbox.c.id == sa.bindparam("outbox_id"), outbox.c.lease_owner == sa.bindparam("owner")
)
# A client cancel that came while the task was being created left a cancel row that will look
# the task up once the create's lease is over: it is told the task instead, due now.
_TELL_CANCEL = (
    sa.update(outbox)
    .where(
        outbox.c.escalation_id == sa.bindparam("cancel_for"),
        outbox.c.kind == CANCEL_TASK,
        outbox.c.lease_owner.is_(None),
    )
    .values(
        payload=sa.bindparam("cancel_payload", type_=outbox.c.payload.type),
        due_at=sa.bindparam("cancel_due", type_=outbox.c.due_at.type),
    )
)


class LostLease(Exception):
    """The row's lease was taken over after the state was saved (PostgreSQL, another
    replica): roll the transaction back."""


@dataclass(frozen=True, slots=True)
class Completion:
    """A leased row done: ``current`` saved over ``previous`` and the row dropped, and the
    cancel of ``cancel_task`` owed (due at ``current.updated_at``)."""

    item: OutboxItem
    owner: str
    previous: Escalation
    current: Escalation
    cancel_task: TaskSid | None = None


def complete_plan(batch: Sequence[Completion]) -> Plan[list[bool]]:
    """One write transaction's statements: for each completion, whether it was carried out
    (False: the lease, or the escalation's version, was lost meanwhile)."""
    done: list[bool] = []
    for completion in batch:
        done.append((yield from _complete(completion)))
    return done


def _complete(completion: Completion) -> Plan[bool]:
    item, previous, current = completion.item, completion.previous, completion.current
    held = {"outbox_id": item.id, "owner": completion.owner}
    changed = current is not previous
    if changed:
        values = {"saved_id": current.id, "saved_version": previous.version, **held}
        if (yield Step(_SAVE_IF_LEASED, {**values, **state_values(current)})) != 1:
            return False
    if (yield Step(_DROP, held)) != 1:
        if changed:
            raise LostLease()
        return False
    if completion.cancel_task is not None:
        yield from _owe_cancel(current, completion.cancel_task)
    if not changed:
        return True
    new_entries = history_values(current.id, current.history[len(previous.history) :])
    if new_entries:
        yield Step(sa.insert(history), new_entries)
    callbacks = status_callback_rows(previous, current, current.updated_at)
    if callbacks:
        yield Step(sa.insert(outbox), callbacks)
    return True


def _owe_cancel(escalation: Escalation, task_sid: TaskSid) -> Plan[None]:
    """Owe the cancel of a task that appeared after its escalation ended, or while its
    client's cancel waited. A cancel row already leased may have looked too early: a second
    cancel is owed then (cancelling a canceled task changes nothing)."""
    now = escalation.updated_at
    payload: dict[str, Any] = {"task_sid": task_sid}
    told = yield Step(
        _TELL_CANCEL, {"cancel_for": escalation.id, "cancel_payload": payload, "cancel_due": now}
    )
    if told == 0:
        yield Step(
            sa.insert(outbox),
            {
                "escalation_id": escalation.id,
                "kind": CANCEL_TASK,
                "due_at": now,
                "created_at": now,
                "payload": payload,
            },
        )
