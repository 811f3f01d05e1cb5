"""Reading TaskRouter's callback forms: keys, times, reasons, channels; no customer data kept."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime

import pytest

from escalator.domain.events import fingerprint
from escalator.routing import AssignmentSpec, RoutingFile, load_routing
from escalator.taskrouter.webhooks import (
    MalformedCallback,
    assignment_channel,
    assignment_instruction,
    parse_event,
)

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
FORM = {
    "EventType": "task.canceled",
    "ResourceSid": "WT1",
    "TaskSid": "WT1",
    "Timestamp": "1795600000",
    "TaskCanceledReason": "Task TTL Exceeded",
    "TaskAttributes": json.dumps(
        {"escalation_id": "esc_1", "ai_summary": "secret", "channel": "sms"}
    ),
    "WorkerAttributes": json.dumps({"phone": "+15558675310"}),
}


def test_an_event_without_sid_is_keyed_by_its_fingerprint_and_keeps_no_attributes() -> None:
    event = parse_event(FORM, received_at=NOW)
    assert event.key == fingerprint("task.canceled", "WT1", None, "WT1", "1795600000")
    assert (event.escalation_id, event.reason) == ("esc_1", "Task TTL Exceeded")
    assert event.occurred_at == datetime.fromtimestamp(1795600000, tz=UTC)
    assert "secret" not in str(asdict(event))
    assert "5558675310" not in str(asdict(event))


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-11-25T08:00:00Z", datetime(2026, 11, 25, 8, tzinfo=UTC)),
        ("2026-11-25T08:00:00", datetime(2026, 11, 25, 8, tzinfo=UTC)),
        ("1795600000.5", datetime.fromtimestamp(1795600000.5, tz=UTC)),
        ("yesterday", NOW),
        ("", NOW),
    ],
)
def test_timestamps_are_epoch_seconds_or_iso_8601(stamp: str, expected: datetime) -> None:
    assert parse_event({**FORM, "Timestamp": stamp}, received_at=NOW).occurred_at == expected


def test_a_sid_is_the_key_when_present_and_event_type_is_required() -> None:
    assert parse_event({**FORM, "Sid": "EV1"}, received_at=NOW).key == "EV1"
    with pytest.raises(MalformedCallback):
        parse_event({"TaskSid": "WT1"}, received_at=NOW)


def test_the_channel_comes_from_the_attributes_then_the_task_channel() -> None:
    assert assignment_channel(FORM) == "sms"
    assert assignment_channel({"TaskChannelUniqueName": "voice"}) == "voice"
    assert assignment_channel({}) is None


def test_instructions_per_channel_with_defaults_for_files_without_a_section() -> None:
    spec = AssignmentSpec()
    assert assignment_instruction(spec.for_channel("chat")).body() == {"instruction": "accept"}
    assert assignment_instruction(spec.for_channel("fax")).body() == {"instruction": "accept"}
    voice = assignment_instruction(spec.for_channel("voice")).body()
    assert voice == {"instruction": "dequeue", "from": "+15005550006"}


def _file(**sections: object) -> dict[str, object]:
    raw = load_routing().file.model_dump(by_alias=True, exclude={"assignment", "cascade"})
    return {**raw, **sections}


def test_the_routing_file_validates_assignment_and_cascade() -> None:
    RoutingFile.model_validate(_file())  # both sections are optional
    with pytest.raises(ValueError, match="needs 'from'"):
        RoutingFile.model_validate(_file(assignment={"voice": {"instruction": "dequeue"}}))
    with pytest.raises(ValueError, match="not an activity"):
        RoutingFile.model_validate(_file(cascade={"activity": "Nowhere"}))
    with pytest.raises(ValueError, match="not available"):
        RoutingFile.model_validate(_file(cascade={"activity": "Break"}))
    off = RoutingFile.model_validate(_file(cascade={"reset": False, "activity": "Nowhere"}))
    assert not off.cascade.reset
