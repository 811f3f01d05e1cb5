"""What an AI agent sends to escalate: the validated body of ``POST /escalations``."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

__all__ = ["MAX_SUMMARY_BYTES", "Channel", "Customer", "EscalationRequest"]

MAX_SUMMARY_BYTES = 16_384
MAX_CONTEXT_DEPTH = 8

_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
# No whitespace and no control characters (PostgreSQL refuses NUL in text).
_EMAIL = r"^[^\s@\x00-\x1f\x7f]+@[^\s@\x00-\x1f\x7f]+\.[^\s@\x00-\x1f\x7f]+$"
_URL = r"^https?://[^\s/\x00-\x1f\x7f]+[^\s\x00-\x1f\x7f]*$"


class Channel(StrEnum):
    """Where the conversation happens."""

    VOICE = "voice"
    CHAT = "chat"
    SMS = "sms"
    WHATSAPP = "whatsapp"
    EMAIL = "email"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Customer(_Strict):
    """Who the customer is, as far as the AI agent knows."""

    id: Annotated[str, Field(min_length=1, max_length=128, pattern=_PRINTABLE)] | None = None
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=_PRINTABLE)] | None = None
    phone: Annotated[str, Field(pattern=r"^\+[1-9][0-9]{1,14}$")] | None = None
    email: Annotated[str, Field(max_length=254, pattern=_EMAIL)] | None = None
    language: Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$")] | None = (
        None
    )


def _depth(value: JsonValue, level: int = 0) -> int:
    if isinstance(value, dict):
        return max((_depth(item, level + 1) for item in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(item, level + 1) for item in value), default=level + 1)
    return level


def _storable(value: JsonValue) -> bool:
    """Finite numbers and NUL-free text only: PostgreSQL's JSON and text types refuse the rest."""
    if isinstance(value, dict):
        return all("\x00" not in key and _storable(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_storable(item) for item in value)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return "\x00" not in value
    return True


class EscalationRequest(_Strict):
    """The body of ``POST /escalations``; unknown fields are refused so typos are not lost."""

    conversation_id: Annotated[str, Field(min_length=1, max_length=128, pattern=_PRINTABLE)]
    reason_code: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    summary: Annotated[str, Field(min_length=1)]
    channel: Channel = Channel.CHAT
    customer: Customer | None = None
    context: dict[str, JsonValue] = Field(default_factory=dict)
    call_sid: Annotated[str, Field(pattern=r"^CA[0-9a-f]{32}$")] | None = None
    status_callback_url: Annotated[str, Field(max_length=2048, pattern=_URL)] | None = None

    @field_validator("summary")
    @classmethod
    def _summary_size(cls, value: str) -> str:
        if len(value.encode("utf-8")) > MAX_SUMMARY_BYTES:
            raise ValueError(f"must be at most {MAX_SUMMARY_BYTES} bytes of UTF-8")
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("context")
    @classmethod
    def _context_depth(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        if _depth(value) > MAX_CONTEXT_DEPTH:
            raise ValueError(f"must nest at most {MAX_CONTEXT_DEPTH} levels deep")
        if not _storable(value):
            raise ValueError("numbers must be finite and text must not contain NUL characters")
        return value
