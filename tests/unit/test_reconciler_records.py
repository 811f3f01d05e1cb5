"""TaskRouter's own record (a Task, its Reservations, Events API records) read back as facts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from escalator.domain.ids import ReservationSid, TaskSid, WorkerSid
from escalator.taskrouter.records import (
    ReservationRecord,
    TaskRecord,
    event_of_record,
    facts_of_task,
)
from escalator.taskrouter.webhooks import parse_event

T0 = datetime(2030, 1, 1, tzinfo=UTC)
TASK = TaskSid("WT" + "1" * 32)


def _reservation(n: int, status: str) -> ReservationRecord:
    return ReservationRecord(
        sid=ReservationSid(f"WR{n:032d}"),
        status=status,
        worker_sid=WorkerSid(f"WK{n:032d}"),
        worker_name=f"Worker {n}",
        date_created=T0 + timedelta(seconds=10 * n),
        date_updated=T0 + timedelta(seconds=10 * n + 5),
    )


@pytest.mark.parametrize(
    ("status", "events"),
    [
        ("pending", ["reservation.created"]),
        ("accepted", ["reservation.created", "reservation.accepted"]),
        ("wrapping", ["reservation.created", "reservation.accepted"]),
        ("completed", ["reservation.created", "reservation.accepted", "reservation.completed"]),
        ("rejected", ["reservation.created", "reservation.rejected"]),
        ("timeout", ["reservation.created", "reservation.timeout"]),
        ("canceled", ["reservation.created", "reservation.canceled"]),
        ("rescinded", ["reservation.created", "reservation.rescinded"]),
    ],
)
def test_each_reservation_status_implies_its_events(status: str, events: list[str]) -> None:
    task = TaskRecord(TASK, "reserved", None, T0)
    facts = facts_of_task(task, [_reservation(1, status)])
    assert [fact.event_type for fact in facts] == events
    assert {fact.worker_name for fact in facts} == {"Worker 1"}


@pytest.mark.parametrize(
    ("status", "ending"),
    [("completed", "task.completed"), ("canceled", "task.canceled"), ("assigned", None)],
)
def test_an_ended_task_implies_its_ending_with_the_reason(status: str, ending: str | None) -> None:
    task = TaskRecord(TASK, status, "Task TTL Exceeded", T0 + timedelta(minutes=5))
    facts = facts_of_task(task, [_reservation(1, "rejected"), _reservation(2, "accepted")])
    assert [f.occurred_at for f in facts] == sorted(f.occurred_at for f in facts)
    last = facts[-1]
    if ending is None:
        assert last.event_type == "reservation.accepted"
    else:
        assert (last.event_type, last.reason) == (ending, "Task TTL Exceeded")


def test_reading_a_task_twice_gives_the_same_keys() -> None:
    task = TaskRecord(TASK, "completed", None, T0)
    first = facts_of_task(task, [_reservation(1, "completed")])
    again = facts_of_task(task, [_reservation(1, "completed")])
    assert [f.key for f in first] == [f.key for f in again]
    assert len({f.key for f in first}) == len(first)


def test_an_events_api_record_reads_as_its_callback_would_but_keyed_by_its_sid() -> None:
    form = {
        "EventType": "task.canceled",
        "TaskSid": TASK,
        "ResourceSid": TASK,
        "Timestamp": "1893456000",
        "TaskCanceledReason": "Task TTL Exceeded",
        "TaskAttributes": '{"escalation_id": "esc_1", "summary": "private"}',
    }
    callback = parse_event(form, received_at=T0)
    record = event_of_record(
        sid="EV" + "2" * 32,
        event_type="task.canceled",
        description="Task TTL Exceeded",
        resource_sid=TASK,
        event_date=T0,
        event_data={
            "task_sid": TASK,
            "task_canceled_reason": "Task TTL Exceeded",
            "task_attributes": form["TaskAttributes"],
            "task_age": 3600,
        },
    )
    assert record.key == "EV" + "2" * 32
    assert record.key != callback.key
    for field in ("event_type", "task_sid", "escalation_id", "reason", "occurred_at"):
        assert getattr(record, field) == getattr(callback, field), field
