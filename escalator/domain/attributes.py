"""An escalation's TaskRouter task attributes: typed, JSON-safe, within the size limit."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from escalator.domain.escalation import Escalation
from escalator.domain.request import Channel

__all__ = [
    "MAX_ATTRIBUTES_CHARS",
    "EncodedAttributes",
    "TaskAttributes",
    "encode_attributes",
    "sanitize_key",
    "sanitize_value",
    "task_attributes",
    "task_channel",
]

# TaskRouter refuses attributes over 4,096 characters, whitespace included (limits page).
MAX_ATTRIBUTES_CHARS = 4_096
_MAX_DEPTH = 8
_ELLIPSIS = "…"
_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")

# TaskRouter's default task channels; WhatsApp conversations are chats to an agent.
_TASK_CHANNELS = {
    Channel.VOICE: "voice",
    Channel.CHAT: "chat",
    Channel.SMS: "sms",
    Channel.WHATSAPP: "chat",
    Channel.EMAIL: "email",
}


def task_channel(channel: Channel) -> str:
    """The TaskRouter task channel unique name for a conversation channel."""
    return _TASK_CHANNELS[channel]


def sanitize_key(key: str) -> str:
    """A TaskRouter-safe attribute name: hyphens, dots and spaces become ``_``."""
    cleaned = _NOT_IDENTIFIER.sub("_", key)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"_{cleaned}"


def sanitize_value(value: object, depth: int = 0) -> Any:
    """A JSON-safe copy of ``value`` with every mapping key made TaskRouter-safe.

    Keys are visited in sorted order, so colliding keys (``a-b`` and ``a_b``) get the same
    suffixes (``a_b``, ``a_b_2``) whatever order the caller sent them in.
    """
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key in sorted(value, key=str):
            name = base = sanitize_key(str(key))
            suffix = 2
            while name in result:
                name, suffix = f"{base}_{suffix}", suffix + 1
            result[name] = sanitize_value(value[key], depth + 1)
        return result
    if isinstance(value, list | tuple):
        return [sanitize_value(item, depth + 1) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


@dataclass(frozen=True, slots=True)
class TaskAttributes:
    """What a TaskRouter task of an escalation carries; workflows and agents read these."""

    escalation_id: str
    conversation_id: str
    reason_code: str
    reason_known: bool
    department: str
    priority: int
    skills: list[str]
    channel: str
    ai_summary: str
    escalated_at: str
    language: str | None = None
    customer: dict[str, str] | None = None
    context: dict[str, Any] | None = None
    call_sid: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False
    context_truncated: bool = False
    ai_summary_truncated: bool = False
    customer_truncated: bool = False

    def to_json(self) -> str:
        """Compact JSON; absent optional fields and false trim flags are left out."""
        # The fields as they are, not asdict's deep copies: json.dumps only reads them.
        body = {
            name: value
            for name in _FIELDS
            if (value := getattr(self, name)) is not None and value is not False
        }
        body["reason_known"] = self.reason_known
        # Routing-file attributes never override the ones escalator itself writes.
        merged = {**self.extra, **body}
        # ensure_ascii: the encoded text is then pure ASCII, so its length in characters equals
        # its length in bytes and bounds both; TaskRouter's limit is stated in characters, and
        # whichever it counts, an ASCII text within the limit is within it.
        return json.dumps(merged, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


_FIELDS = tuple(f.name for f in fields(TaskAttributes) if f.name != "extra")


@dataclass(frozen=True, slots=True)
class EncodedAttributes:
    """Task attributes as sent to TaskRouter, and whether anything had to be trimmed."""

    json: str
    truncated: bool


def task_attributes(escalation: Escalation) -> TaskAttributes:
    """The full, untrimmed attributes of an escalation's task."""
    customer = escalation.customer
    customer_fields = (
        {k: v for k, v in customer.model_dump(exclude={"language"}).items() if v is not None}
        if customer
        else {}
    )
    return TaskAttributes(
        escalation_id=escalation.id,
        conversation_id=escalation.conversation_id,
        reason_code=escalation.reason_code,
        reason_known=escalation.known_reason,
        department=escalation.department,
        priority=escalation.priority,
        skills=list(escalation.skills),
        channel=escalation.channel.value,
        ai_summary=escalation.summary,
        escalated_at=escalation.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        language=customer.language if customer else None,
        customer=customer_fields or None,
        context=sanitize_value(escalation.context) or None,
        call_sid=escalation.call_sid,
        extra=sanitize_value(escalation.route_attributes),
    )


def _trim_context(attrs: TaskAttributes, limit: int) -> TaskAttributes:
    context = dict(attrs.context or {})
    by_size = sorted(context, key=lambda key: len(json.dumps(context[key])), reverse=True)
    for key in by_size:
        del context[key]
        attrs = replace(attrs, context=context or None, context_truncated=True, truncated=True)
        if len(attrs.to_json()) <= limit:
            break
    return attrs


def _trim_summary(attrs: TaskAttributes, limit: int) -> TaskAttributes:
    text = attrs.ai_summary
    low, high = 0, len(text)
    best = replace(attrs, ai_summary=_ELLIPSIS, ai_summary_truncated=True, truncated=True)
    while low <= high:  # the longest prefix that still fits
        middle = (low + high) // 2
        candidate = replace(best, ai_summary=text[:middle] + _ELLIPSIS)
        if len(candidate.to_json()) <= limit:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best


def encode_attributes(
    escalation: Escalation, *, limit: int = MAX_ATTRIBUTES_CHARS
) -> EncodedAttributes:
    """Encode the task attributes, trimming ``context``, then ``ai_summary``, then ``customer``."""
    attrs = task_attributes(escalation)
    steps = (
        _trim_context,
        _trim_summary,
        lambda a, _limit: replace(a, customer=None, customer_truncated=True, truncated=True),
    )
    encoded = attrs.to_json()
    for step in steps:
        if len(encoded) <= limit:
            break
        attrs = step(attrs, limit)
        encoded = attrs.to_json()
    if len(encoded) > limit:
        raise ValueError(f"task attributes need {len(encoded)} characters, over {limit}")
    return EncodedAttributes(json=encoded, truncated=attrs.truncated)
