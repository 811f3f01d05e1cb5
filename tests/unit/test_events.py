"""What TaskRouter events do to an escalation: a table tested row by row, and properties."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escalator.domain.escalation import (
    Escalation,
    Outcome,
    ReservationOutcome,
    Status,
    task_attached,
)
from escalator.domain.events import (
    CANCEL_REASON,
    RESERVATION_OUTCOMES,
    TaskRouterEvent,
    apply_event,
    cancel_outcome,
    fingerprint,
)
from escalator.domain.ids import EscalationId, ReservationSid, TaskSid, WorkerSid
from tests.unit.factories import NOW, escalation

TASK = TaskSid("WT" + "1" * 32)
ANN, BOB = WorkerSid("WK" + "a" * 32), WorkerSid("WK" + "b" * 32)
R1, R2 = ReservationSid("WR" + "1" * 32), ReservationSid("WR" + "2" * 32)


def _event(n: int, event_type: str, **fields: object) -> TaskRouterEvent:
    return TaskRouterEvent(
        key=f"k{n}-{event_type}-{fields.get('reservation_sid', '')}",
        event_type=event_type,
        occurred_at=NOW + timedelta(seconds=n),
        task_sid=TASK,
        **fields,  # type: ignore[arg-type]
    )


def _queued() -> Escalation:
    return task_attached(escalation(), TASK, now=NOW)


def _run(start: Escalation, events: list[TaskRouterEvent]) -> Escalation:
    for event in events:
        start = apply_event(start, event)
    return start


REJECT_THEN_ACCEPT = [
    _event(1, "reservation.created", reservation_sid=R1, worker_sid=ANN),
    _event(2, "reservation.rejected", reservation_sid=R1, worker_sid=ANN),
    _event(3, "reservation.created", reservation_sid=R2, worker_sid=BOB),
    _event(4, "reservation.accepted", reservation_sid=R2, worker_sid=BOB, worker_name="Bob"),
    _event(5, "task.wrapup"),
    _event(6, "reservation.completed", reservation_sid=R2, worker_sid=BOB),
    _event(7, "task.completed", reason="done"),
]
TIMEOUT_THEN_TTL = [
    _event(1, "reservation.created", reservation_sid=R1, worker_sid=ANN),
    _event(2, "reservation.timeout", reservation_sid=R1, worker_sid=ANN),
    _event(3, "task.canceled", reason="Task TTL Exceeded"),
]
RESCINDED_AND_ACCEPTED = [
    _event(1, "reservation.created", reservation_sid=R1, worker_sid=ANN),
    _event(2, "reservation.created", reservation_sid=R2, worker_sid=BOB),
    _event(3, "reservation.accepted", reservation_sid=R2, worker_sid=BOB, worker_name="Bob"),
    _event(4, "reservation.rescinded", reservation_sid=R1, worker_sid=ANN),
    _event(5, "task.completed"),
]
CANCELED_BY_CLIENT = [
    _event(1, "reservation.created", reservation_sid=R1, worker_sid=ANN),
    _event(2, "reservation.canceled", reservation_sid=R1, worker_sid=ANN),
    _event(3, "task.canceled", reason=CANCEL_REASON),
]
COMPLETED_THEN_DELETED = [
    _event(1, "reservation.created", reservation_sid=R1, worker_sid=ANN),
    _event(2, "reservation.accepted", reservation_sid=R1, worker_sid=ANN, worker_name="Ann"),
    _event(3, "task.completed"),
    _event(4, "task.deleted"),
]
WORKFLOW_TIMED_OUT = [
    _event(1, "reservation.created", reservation_sid=R1, worker_sid=ANN),
    _event(2, "reservation.timeout", reservation_sid=R1, worker_sid=ANN),
    _event(3, "workflow.timeout"),
    _event(4, "task.canceled", reason="Workflow Timeout"),
    _event(5, "task.system-deleted"),
]
SEQUENCES = [
    COMPLETED_THEN_DELETED,
    WORKFLOW_TIMED_OUT,
    REJECT_THEN_ACCEPT,
    TIMEOUT_THEN_TTL,
    RESCINDED_AND_ACCEPTED,
    CANCELED_BY_CLIENT,
    # Unfinished lifecycles: the order-independence must hold before the end too.
    REJECT_THEN_ACCEPT[:2],
    REJECT_THEN_ACCEPT[:3],
    REJECT_THEN_ACCEPT[:4],
    RESCINDED_AND_ACCEPTED[:2],
]


def test_a_rejection_then_an_acceptance_walks_the_documented_statuses() -> None:
    value = _queued()
    statuses = []
    for event in REJECT_THEN_ACCEPT:
        value = apply_event(value, event)
        statuses.append(value.status)
    assert statuses == [
        Status.RESERVED,
        Status.QUEUED,
        Status.RESERVED,
        Status.ASSIGNED,
        Status.ASSIGNED,
        Status.ASSIGNED,
        Status.COMPLETED,
    ]
    assert value.outcome is Outcome.COMPLETED
    assert (value.worker_sid, value.worker_name) == (BOB, "Bob")
    outcomes = [(e.reservation_sid, e.outcome) for e in value.history if e.reservation_sid]
    assert (R1, ReservationOutcome.REJECTED) in outcomes
    assert (R2, ReservationOutcome.ACCEPTED) in outcomes


@pytest.mark.parametrize(("event_type", "outcome"), sorted(RESERVATION_OUTCOMES.items()))
def test_each_reservation_event_records_its_outcome(
    event_type: str, outcome: ReservationOutcome
) -> None:
    value = apply_event(_queued(), _event(1, event_type, reservation_sid=R1, worker_sid=ANN))
    assert value.history[-1].outcome is outcome


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        ("Task TTL Exceeded", Outcome.TTL_EXPIRED),
        ("Workflow Timeout", Outcome.WORKFLOW_TIMEOUT),
        ("Task exceeded the maximum of 1000 reservations", Outcome.TOO_MANY_REJECTIONS),
        ("hangup", Outcome.CALLER_ABANDONED),
        (CANCEL_REASON, Outcome.CANCELED_BY_CLIENT),
        ("someone clicked cancel", Outcome.CANCELED_OTHER),
        (None, Outcome.CANCELED_OTHER),
    ],
)
def test_cancel_reasons_map_to_typed_outcomes(reason: str | None, outcome: Outcome) -> None:
    assert cancel_outcome(reason) is outcome
    value = apply_event(_queued(), _event(1, "task.canceled", reason=reason))
    assert (value.status, value.outcome) == (Status.CANCELED, outcome)


@pytest.mark.parametrize(
    ("event_type", "outcome"),
    [
        ("workflow.timeout", Outcome.WORKFLOW_TIMEOUT),
        ("task.deleted", Outcome.TASK_DELETED),
        ("task.system-deleted", Outcome.TASK_DELETED),
        ("task.completed", Outcome.COMPLETED),
    ],
)
def test_terminal_task_events(event_type: str, outcome: Outcome) -> None:
    value = apply_event(_queued(), _event(1, event_type))
    assert value.status.is_terminal
    assert value.outcome is outcome


def test_a_task_created_event_adopts_the_task_of_a_received_escalation() -> None:
    adopted = apply_event(escalation(), _event(1, "task.created"))
    assert adopted.task_sid == TASK
    assert adopted.status is Status.QUEUED


def test_a_finished_escalation_adopts_no_task() -> None:
    from escalator.domain.escalation import TwilioFailure, task_refused

    failed = task_refused(escalation(), TwilioFailure(400, 20001, "no"), now=NOW)
    after = apply_event(failed, _event(1, "task.created"))
    assert after.task_sid is None
    assert after.status is Status.FAILED


def test_a_deletion_is_explained_by_a_late_completion_but_nothing_else() -> None:
    deleted = apply_event(_queued(), _event(1, "task.deleted"))
    assert deleted.outcome is Outcome.TASK_DELETED
    late_accept = apply_event(
        deleted, _event(2, "reservation.accepted", reservation_sid=R1, worker_sid=ANN)
    )
    assert (late_accept.status, late_accept.outcome) == (Status.CANCELED, Outcome.TASK_DELETED)
    completed = apply_event(late_accept, _event(3, "task.completed"))
    assert (completed.status, completed.outcome) == (Status.COMPLETED, Outcome.COMPLETED)
    assert apply_event(completed, _event(4, "task.canceled")).outcome is Outcome.COMPLETED


def test_events_of_another_task_are_ignored() -> None:
    other = TaskRouterEvent("x", "task.completed", NOW, task_sid=TaskSid("WT" + "9" * 32))
    assert apply_event(_queued(), other) == _queued()


def test_a_duplicate_event_is_a_no_op() -> None:
    once = apply_event(_queued(), REJECT_THEN_ACCEPT[0])
    assert apply_event(once, REJECT_THEN_ACCEPT[0]) is once


def test_fingerprints_are_stable_and_distinguish_events() -> None:
    first = fingerprint("task.created", "WT1", None, "WT1", "1700000000")
    assert first == fingerprint("task.created", "WT1", None, "WT1", "1700000000")
    assert first != fingerprint("task.created", "WT1", None, "WT1", "1700000001")


_DECISIVE = {"task.completed", "task.canceled", "workflow.timeout"}


def _final(value: Escalation) -> tuple[Status, Outcome | None, WorkerSid | None]:
    return value.status, value.outcome, value.worker_sid


@settings(max_examples=300, derandomize=True, deadline=None)
@given(data=st.data(), which=st.sampled_from(range(len(SEQUENCES))))
def test_shuffled_and_duplicated_events_reach_the_same_state(
    data: st.DataObject, which: int
) -> None:
    sequence = SEQUENCES[which]
    expected = _final(_run(_queued(), sequence))
    noisy = data.draw(
        st.lists(st.sampled_from(sequence), min_size=len(sequence), max_size=3 * len(sequence))
    )
    noisy = [*noisy, *data.draw(st.permutations(sequence))]  # every fact at least once
    assert _final(_run(_queued(), noisy)) == expected


@settings(max_examples=300, derandomize=True, deadline=None)
@given(data=st.data(), which=st.sampled_from(range(len(SEQUENCES))))
def test_dropped_events_never_regress_and_terminal_facts_win(
    data: st.DataObject, which: int
) -> None:
    sequence = SEQUENCES[which]
    kept = data.draw(st.lists(st.sampled_from(sequence), max_size=2 * len(sequence)))
    value, terminal_seen = _queued(), None
    for event in kept:
        value = apply_event(value, event)
        if terminal_seen is not None and terminal_seen[1] is not Outcome.TASK_DELETED:
            # Terminal states never change (a late acceptance may still name the worker); only
            # a deletion may be explained by a completion or cancel that arrives after it.
            assert (value.status, value.outcome) == terminal_seen
        if value.status.is_terminal:
            terminal_seen = (value.status, value.outcome)
    expected = _final(_run(_queued(), sequence))
    decisive = [e for e in sequence if e.event_type in _DECISIVE]
    if any(e in kept for e in decisive):  # the completion or cancel arrived: it decides
        assert value.status == expected[0]
        assert value.outcome == expected[1]
    elif any(e.event_type.endswith("deleted") for e in kept):
        assert value.outcome is Outcome.TASK_DELETED


def test_escalation_ids_stay_ours() -> None:
    assert escalation().id == EscalationId("esc_0123456789abcdef0123456789abcdef")


def test_the_same_fact_under_another_key_is_not_recorded_twice() -> None:
    once = _run(_queued(), REJECT_THEN_ACCEPT)
    again = [
        TaskRouterEvent(
            f"EV{n}",
            e.event_type,
            e.occurred_at,
            e.task_sid,
            None,
            e.reservation_sid,
            e.worker_sid,
            e.worker_name,
            e.reason,
        )
        for n, e in enumerate(REJECT_THEN_ACCEPT)
    ]
    assert _run(once, again) == once
