"""The ``Idempotency-Key`` header of ``POST /escalations`` (IETF httpapi draft): the key, whose it
is, the request's fingerprint, and what the store's answer means for the response."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import assert_never

from escalator.api.problems import IN_FLIGHT, KEY_REUSED, Problem
from escalator.domain.escalation import Escalation
from escalator.domain.request import EscalationRequest
from escalator.logs import get_logger
from escalator.store import IdempotencyKey, IdempotencyResult, KeyedCreation

__all__ = [
    "ANONYMOUS",
    "HEADER",
    "REPLAYED_HEADER",
    "answered",
    "fingerprint",
    "idempotency_key",
    "parse_key",
    "scope_of",
]

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# The scope of keys sent without an API key (a service configured without any).
ANONYMOUS = "anonymous"
_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_log = get_logger(__name__)


def parse_key(values: Sequence[str]) -> str | None:
    """The key the request's ``Idempotency-Key`` headers carry, or None; a 400 when malformed."""
    if not values:
        return None
    if len(values) > 1:
        raise Problem(400, f"send one {HEADER} header, not {len(values)}")
    if not _KEY.fullmatch(values[0]):
        raise Problem(400, f"the {HEADER} header must be 1 to 255 printable ASCII characters")
    return values[0]


def scope_of(api_key: str | None) -> str:
    """Whose keys these are: a SHA-256 of the API key that sent them (never the key itself)."""
    if api_key is None:
        return ANONYMOUS
    return hashlib.sha256(api_key.encode()).hexdigest()


def fingerprint(body: EscalationRequest) -> str:
    """A SHA-256 of the validated request as canonical JSON: key order, spacing and defaults
    spelled out or left out do not change it."""
    canonical = json.dumps(
        body.model_dump(mode="json"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_key(
    key: str, *, api_key: str | None, body: EscalationRequest, now: datetime, ttl: float
) -> IdempotencyKey:
    """The key as the store keeps it, live for ``ttl`` seconds from ``now``."""
    return IdempotencyKey(
        scope=scope_of(api_key),
        key=key,
        fingerprint=fingerprint(body),
        received_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )


def answered(outcome: KeyedCreation) -> tuple[Escalation, bool]:
    """The escalation to answer with and whether it is new; the problem when there is none."""
    match outcome.result:
        case IdempotencyResult.NEW | IdempotencyResult.REPLAYED:
            if outcome.escalation is None:
                raise AssertionError("the store answered a key without an escalation")
            return outcome.escalation, outcome.created
        case IdempotencyResult.MISMATCH:
            _log.info("idempotency.key_reused")
            raise Problem(
                422,
                f"this {HEADER} was already used with another request body; "
                "use a new key for a new request",
                kind=KEY_REUSED,
            )
        case IdempotencyResult.CONFLICT:
            _log.info("idempotency.in_flight")
            raise Problem(
                409,
                f"an earlier request with this {HEADER}, or for this conversation, is still "
                "being processed; retry after Retry-After seconds",
                headers={"Retry-After": "1"},
                kind=IN_FLIGHT,
            )
        case _:
            assert_never(outcome.result)
