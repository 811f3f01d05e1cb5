"""Logs never carry customer content: the redaction processor, and configured logging end to end."""

from __future__ import annotations

import json
import logging

import pytest

from escalator.logs import configure_logging, get_logger, redact


def test_customer_fields_are_dropped_whatever_they_hold() -> None:
    event = redact(None, "info", {"summary": "my card was stolen", "customer": {"id": "7"}})
    assert event == {"summary": "[redacted]", "customer": "[redacted]"}


def test_phone_numbers_and_emails_are_masked_inside_other_values() -> None:
    event = redact(
        None,
        "info",
        {"note": "call +1 (555) 867-5310 or ada@example.com", "nested": {"k": ["+447911123456"]}},
    )
    assert event["note"] == "call [redacted] or [redacted]"
    assert event["nested"] == {"k": ["[redacted]"]}


def test_ids_addresses_and_small_numbers_are_kept() -> None:
    event = {
        "escalation_id": "esc_0123456789abcdef0123456789abcdef",
        "task_sid": "WT0123456789abcdef0123456789abcdef",
        "host": "127.0.0.1",
        "code": "20429",
    }
    assert redact(None, "info", dict(event)) == event


def test_configured_logging_writes_json_without_pii(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="json", level="info")
    try:
        get_logger("test").info(
            "escalation.created",
            escalation_id="esc_1",
            summary="secret summary",
            detail="reach me at ada@example.com",
        )
        logging.getLogger("foreign").warning("caller +15558675310 waiting")
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["event"] == "escalation.created"
    assert lines[0]["escalation_id"] == "esc_1"
    text = "\n".join(json.dumps(line) for line in lines)
    assert "secret summary" not in text
    assert "ada@example.com" not in text
    assert "5558675310" not in text
