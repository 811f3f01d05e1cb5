"""Escalation transitions: pure functions of the old value, the fact and the time."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from pydantic import ValidationError

from escalator.domain.changes import cancel_for_client, cancel_not_applied, client_canceled
from escalator.domain.escalation import (
    ATTEMPT_EVENTS,
    RECORDED_RUN,
    Attempt,
    AttemptKind,
    AttemptOutcome,
    Escalation,
    Outcome,
    Status,
    TwilioFailure,
    attempts_recorded,
    task_after_end,
    task_attached,
    task_refused,
)
from escalator.domain.ids import TaskSid
from escalator.domain.request import EscalationRequest
from tests.unit.factories import NOW, escalation

TASK = TaskSid("WT" + "a" * 32)


def test_a_new_escalation_is_received_with_one_history_entry() -> None:
    value = escalation()
    assert value.status is Status.RECEIVED
    assert [entry.event for entry in value.history] == ["escalation.received"]
    assert value.version == 1


def test_attaching_a_task_queues_the_escalation_and_records_it() -> None:
    later = NOW + timedelta(seconds=1)
    queued = task_attached(escalation(), TASK, now=later)
    assert queued.status is Status.QUEUED
    assert queued.task_sid == TASK
    assert queued.updated_at == later
    assert queued.history[-1].event == "task.created"
    assert queued.version == 2


def test_adopting_a_found_task_is_told_apart_from_creating_one() -> None:
    adopted = task_attached(escalation(), TASK, now=NOW, adopted=True).history[-1]
    created = task_attached(escalation(), TASK, now=NOW).history[-1]
    assert (adopted.event, adopted.attempt) == ("task.adopted", AttemptOutcome.FOUND)
    assert (created.event, created.attempt) == ("task.created", AttemptOutcome.CREATED)


def test_a_second_task_never_replaces_the_first() -> None:
    queued = task_attached(escalation(), TASK, now=NOW)
    assert task_attached(queued, TaskSid("WT" + "b" * 32), now=NOW) is queued


def test_a_permanent_refusal_fails_the_escalation_with_twilio_rejected() -> None:
    failure = TwilioFailure(status=400, code=20001, message="Invalid workflow")
    failed = task_refused(escalation(), failure, now=NOW)
    assert failed.status is Status.FAILED
    assert failed.status.is_terminal
    assert failed.outcome is Outcome.TWILIO_REJECTED
    assert failed.error == failure
    assert failed.history[-1].detail == {"status": 400}
    assert failed.history[-1].attempt is AttemptOutcome.REJECTED
    assert failed.history[-1].twilio_code == 20001


def test_a_refusal_cannot_undo_an_existing_task() -> None:
    queued = task_attached(escalation(), TASK, now=NOW)
    failure = TwilioFailure(status=400, code=20001, message="late")
    assert task_refused(queued, failure, now=NOW) is queued


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("conversation_id", ""),
        ("conversation_id", "x" * 129),
        ("conversation_id", "bad\nid"),
        ("reason_code", "has space"),
        ("summary", ""),
        ("summary", "é" * 8193),
        ("channel", "fax"),
        ("call_sid", "CA123"),
        ("customer", {"phone": "555-1234"}),
        ("customer", {"email": "not-an-email"}),
        ("customer", {"nickname": "x"}),
        ("context", {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}),
        ("status_callback_url", "ftp://example.com"),
        ("summary", "nul\x00byte"),
        ("context", {"x": float("nan")}),
        ("context", {"x": [float("inf")]}),
        ("context", {"k\x00": 1}),
        ("customer", {"email": "a\x00b@example.com"}),
        ("status_callback_url", "https://example.com/\x00"),
        ("unknown_field", 1),
    ],
)
def test_the_request_model_refuses_bad_fields(field: str, value: object) -> None:
    body = {"conversation_id": "c", "reason_code": "general", "summary": "s", field: value}
    with pytest.raises(ValidationError):
        EscalationRequest.model_validate(body)


def _failures(count: int, *, code: int | None = 20503) -> list[Attempt]:
    return [
        Attempt(
            at=NOW + timedelta(seconds=n),
            kind=AttemptKind.CREATE if n % 2 else AttemptKind.LOOKUP,
            outcome=AttemptOutcome.TRANSIENT_ERROR,
            twilio_code=code,
            http_status=503,
        )
        for n in range(count)
    ]


def _attempt_entries(value: Escalation) -> int:
    return sum(entry.event in ATTEMPT_EVENTS for entry in value.history)


def test_unsettled_attempts_are_recorded_with_outcome_and_code_status_unchanged() -> None:
    attempts = [
        Attempt(
            at=NOW,
            kind=AttemptKind.CREATE,
            outcome=AttemptOutcome.TRANSIENT_ERROR,
            twilio_code=20503,
            http_status=503,
        ),
        Attempt(at=NOW, kind=AttemptKind.LOOKUP, outcome=AttemptOutcome.NOT_FOUND),
    ]
    value = attempts_recorded(escalation(), attempts, retry=1)
    created, looked = value.history[-2:]
    assert (created.event, created.attempt, created.twilio_code, created.detail) == (
        "task.create_attempt",
        AttemptOutcome.TRANSIENT_ERROR,
        20503,
        {"status": 503},
    )
    assert (looked.event, looked.attempt, looked.twilio_code, looked.detail) == (
        "task.lookup",
        AttemptOutcome.NOT_FOUND,
        None,
        None,
    )
    assert value.status is Status.RECEIVED
    assert all(entry.status is Status.RECEIVED for entry in value.history)
    assert all(entry.outcome is None for entry in value.history)


def test_recording_no_attempt_returns_the_same_value() -> None:
    value = escalation()
    assert attempts_recorded(value, [], retry=3) is value


def test_a_long_run_of_failures_keeps_the_first_ones_then_one_lease_in_ten() -> None:
    value = escalation()
    for lease in range(1, 101):
        value = attempts_recorded(value, _failures(3), retry=lease)
    # 20 in full (leases 1 to 7), then the last attempt of leases 10, 20, ..., 100.
    assert _attempt_entries(value) == RECORDED_RUN + 10
    sampled = [entry.detail for entry in value.history[1 + RECORDED_RUN :]]
    assert sampled == [{"status": 503, "retry": lease} for lease in range(10, 101, 10)]


def test_a_settled_attempt_ends_the_run_and_a_new_run_is_recorded_in_full() -> None:
    value = escalation()
    for lease in range(1, 30):
        value = attempts_recorded(value, _failures(1), retry=lease)
    queued = task_attached(value, TASK, now=NOW)
    again = attempts_recorded(queued, _failures(3), retry=31)
    assert _attempt_entries(again) == _attempt_entries(queued) + 3


def test_a_task_after_the_end_is_recorded_without_reopening_the_escalation() -> None:
    canceled = replace(escalation(), status=Status.CANCELED, outcome=Outcome.CANCELED_BY_CLIENT)
    late = task_after_end(canceled, TASK, now=NOW, adopted=False)
    entry = late.history[-1]
    assert (late.status, late.task_sid, late.outcome) == (
        Status.CANCELED,
        None,
        Outcome.CANCELED_BY_CLIENT,
    )
    assert (entry.event, entry.status, entry.attempt, entry.detail) == (
        "task.after_end",
        Status.CANCELED,
        AttemptOutcome.CREATED,
        {"task_sid": TASK},
    )
    assert task_after_end(escalation(), TASK, now=NOW, adopted=True) == escalation()


def test_a_client_cancel_is_final_at_once_only_when_no_task_can_exist() -> None:
    received = escalation()
    at_once = cancel_for_client(received, now=NOW, task_may_exist=False)
    assert (at_once.status, at_once.outcome, at_once.cancel_requested) == (
        Status.CANCELED,
        Outcome.CANCELED_BY_CLIENT,
        False,
    )
    queued = task_attached(received, TASK, now=NOW)
    waiting = cancel_for_client(queued, now=NOW, task_may_exist=True)
    assert (waiting.status, waiting.outcome, waiting.cancel_requested) == (
        Status.QUEUED,
        None,
        True,
    )
    assert waiting.history[-1].event == "escalation.cancel_requested"
    # Asking again while it waits changes nothing; neither does asking once it ended.
    assert cancel_for_client(waiting, now=NOW, task_may_exist=True) is waiting
    assert cancel_for_client(at_once, now=NOW, task_may_exist=False) is at_once


def test_taskrouters_answer_settles_a_waiting_cancel() -> None:
    waiting = cancel_for_client(escalation(), now=NOW, task_may_exist=True)
    canceled = client_canceled(waiting, now=NOW, task_sid=TASK)
    # The task TaskRouter canceled was found by the cancel: the escalation names it.
    assert (canceled.status, canceled.task_sid, canceled.cancel_requested) == (
        Status.CANCELED,
        TASK,
        False,
    )
    refused = cancel_not_applied(waiting, now=NOW, why="assigned")
    assert (refused.status, refused.outcome, refused.cancel_requested) == (
        Status.RECEIVED,
        None,
        False,
    )
    # An assigned escalation cannot be canceled: a human has it.
    assigned = replace(task_attached(escalation(), TASK, now=NOW), status=Status.ASSIGNED)
    assert cancel_for_client(assigned, now=NOW, task_may_exist=True) is assigned
