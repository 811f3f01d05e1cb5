"""The task attributes builder: JSON-safe, hyphen-free, size-bounded, round-tripping."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escalator.domain.attributes import (
    MAX_ATTRIBUTES_CHARS,
    encode_attributes,
    sanitize_key,
    sanitize_value,
    task_channel,
)
from escalator.domain.request import MAX_SUMMARY_BYTES, Channel
from tests.unit.factories import escalation

IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(key for item in value.values() for key in _keys(item))]
    if isinstance(value, list):
        return [key for item in value for key in _keys(item)]
    return []


def test_always_carries_the_escalation_id_and_the_summary() -> None:
    attrs = json.loads(encode_attributes(escalation(summary="Wants a refund.")).json)
    assert attrs["escalation_id"] == "esc_0123456789abcdef0123456789abcdef"
    assert attrs["ai_summary"] == "Wants a refund."
    assert attrs["skills"] == ["billing"]
    assert attrs["department"] == "billing"
    assert attrs["priority"] == 50
    assert attrs["channel"] == "chat"
    assert attrs["escalated_at"] == "2026-11-25T09:00:00Z"
    assert "truncated" not in attrs


def test_hyphens_dots_and_spaces_in_context_keys_become_underscores() -> None:
    attrs = json.loads(
        encode_attributes(escalation(context={"order-id": 1, "a.b c": {"x-y": 2}})).json
    )
    assert attrs["context"] == {"a_b_c": {"x_y": 2}, "order_id": 1}


def test_colliding_keys_get_deterministic_suffixes_whatever_the_order() -> None:
    first = sanitize_value({"a-b": 1, "a_b": 2, "a b": 3})
    second = sanitize_value({"a_b": 2, "a b": 3, "a-b": 1})
    assert first == second == {"a_b": 3, "a_b_2": 1, "a_b_3": 2}


def test_keys_that_start_with_a_digit_are_prefixed() -> None:
    assert sanitize_key("1st") == "_1st"
    assert sanitize_key("") == "_"


def test_whatsapp_conversations_use_the_chat_task_channel() -> None:
    assert task_channel(Channel.WHATSAPP) == "chat"
    assert task_channel(Channel.VOICE) == "voice"


def test_unknown_reason_codes_are_flagged() -> None:
    attrs = json.loads(encode_attributes(escalation(reason_code="made_up")).json)
    assert attrs["reason_known"] is False
    assert attrs["department"] == "general"


def test_context_is_trimmed_before_the_summary() -> None:
    big = escalation(summary="short summary", context={"notes": "x" * 5000, "order_id": "A1"})
    encoded = encode_attributes(big)
    attrs = json.loads(encoded.json)
    assert encoded.truncated
    assert attrs["ai_summary"] == "short summary"
    assert attrs["context"] == {"order_id": "A1"}
    assert attrs["context_truncated"] is True
    assert "ai_summary_truncated" not in attrs


def test_a_long_summary_is_cut_with_a_marker_to_fit() -> None:
    text = "word " * 3000
    encoded = encode_attributes(escalation(summary=text))
    attrs = json.loads(encoded.json)
    assert len(encoded.json) <= MAX_ATTRIBUTES_CHARS
    assert len(encoded.json) > MAX_ATTRIBUTES_CHARS - 20  # it keeps as much as fits
    assert attrs["ai_summary"].endswith("…")
    assert text.startswith(attrs["ai_summary"][:-1])
    assert attrs["ai_summary_truncated"] is True
    assert attrs["truncated"] is True


def test_non_ascii_text_is_budgeted_by_its_escaped_length() -> None:
    encoded = encode_attributes(escalation(summary="😀" * 4000))
    assert encoded.json.isascii()
    assert len(encoded.json.encode()) <= MAX_ATTRIBUTES_CHARS


no_nul = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
# What EscalationRequest accepts: finite numbers, NUL-free text (the store refuses the rest).
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(no_nul, max_size=40)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(no_nul, max_size=12), inner, max_size=4)
    ),
    max_leaves=30,
)
printable = st.text(
    alphabet=st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)),
    min_size=1,
    max_size=128,
).filter(lambda s: s.strip() and "\x7f" not in s)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    context=st.dictionaries(st.text(no_nul, max_size=20), json_value, max_size=8),
    summary=st.text(no_nul, min_size=1, max_size=4000).filter(
        lambda s: s.strip() and len(s.encode()) <= MAX_SUMMARY_BYTES
    ),
    conversation_id=printable,
    name=st.none() | printable,
)
def test_any_caller_input_gives_valid_bounded_hyphen_free_json(
    context: dict[str, Any], summary: str, conversation_id: str, name: str | None
) -> None:
    customer = {"name": name, "email": "a@b.co", "phone": "+15558675310"} if name else None
    value = escalation(
        context=context, summary=summary, conversation_id=conversation_id, customer=customer
    )
    encoded = encode_attributes(value)
    assert len(encoded.json) <= MAX_ATTRIBUTES_CHARS
    decoded = json.loads(encoded.json)
    assert all(re.fullmatch(IDENTIFIER, key) for key in _keys(decoded))
    assert decoded["escalation_id"] == "esc_0123456789abcdef0123456789abcdef"
    assert "ai_summary" in decoded
    # Round trip: what TaskRouter stores decodes to what we encoded.
    assert json.loads(json.dumps(decoded, ensure_ascii=True, separators=(",", ":"))) == decoded
    if not encoded.truncated:
        assert decoded["ai_summary"] == value.summary
