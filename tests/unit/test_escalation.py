"""Escalation transitions: pure functions of the old value, the fact and the time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from escalator.domain.escalation import (
    Outcome,
    Status,
    TwilioFailure,
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
    assert task_attached(escalation(), TASK, now=NOW, adopted=True).history[-1].event == (
        "task.adopted"
    )


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
    assert failed.history[-1].detail == {"status": 400, "code": 20001}


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
