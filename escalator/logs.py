"""Structured logging: structlog configured once, with a processor keeping PII out."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal

import structlog

__all__ = ["configure_logging", "get_logger", "redact"]

# Field names whose values are customer content: never logged, whatever they hold.
_SECRET_KEYS = frozenset(
    {
        "summary",
        "ai_summary",
        "customer",
        "name",
        "phone",
        "email",
        "context",
        "attributes",
        "task_attributes",
        "body",
        "authorization",
        "auth_token",
        "api_key",
        "password",
        "token",
        "handoff_data",
    }
)
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")
# Phone-like runs: an optional +, digits split by spaces, dashes or parentheses, 7 digits or
# more. SIDs (two letters then 32 hex digits) are ids, not PII, and are left alone.
_PHONE = re.compile(r"(?<![A-Za-z0-9.])\+?\(?\d[\d\s()-]{5,}\d(?![A-Za-z0-9.])")
_MIN_PHONE_DIGITS = 7
_REDACTED = "[redacted]"


def _mask_phone(match: re.Match[str]) -> str:
    digits = sum(char.isdigit() for char in match.group())
    return _REDACTED if digits >= _MIN_PHONE_DIGITS else match.group()


def _scrub(value: object) -> object:
    if isinstance(value, str):
        return _PHONE.sub(_mask_phone, _EMAIL.sub(_REDACTED, value))
    if isinstance(value, Mapping):
        return {
            key: _REDACTED if str(key).lower() in _SECRET_KEYS else _scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def redact(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: drop customer content, mask phone numbers and emails."""
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = _REDACTED
        elif key not in {"timestamp", "level"}:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def configure_logging(
    *, fmt: Literal["console", "json"] | None = None, level: str = "info"
) -> None:
    """Configure structlog and the standard library's loggers to write one line per event."""
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    structlog.configure(
        # filter_by_level first: an event below the level costs a comparison, not the chain.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Each call through an uncached proxy builds a new bound logger. Safe to cache: a
        # reconfiguration changes the level and the renderer, which live in the standard
        # library's logger and handler, not in these processors.
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The twilio SDK logs every request's query string and headers at INFO.
    logging.getLogger("twilio").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Alembic reports its context at INFO each time readiness reads the schema revision.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # aiosqlite logs every statement with its parameters (summaries, phone numbers) at DEBUG.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger for module ``name``."""
    return structlog.stdlib.get_logger(name)
