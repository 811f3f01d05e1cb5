"""The Idempotency-Key header: which values are keys, whose they are, and request fingerprints."""

from __future__ import annotations

import hashlib

import pytest

from escalator.api.idempotency import ANONYMOUS, answered, fingerprint, parse_key, scope_of
from escalator.api.problems import IN_FLIGHT, KEY_REUSED, Problem
from escalator.domain.request import EscalationRequest
from escalator.errors import ConfigurationError
from escalator.settings import load_settings
from escalator.store import IdempotencyResult, KeyedCreation
from tests.unit.factories import escalation

BODY = '{"conversation_id": "CA1", "reason_code": "billing_dispute", "summary": "Hi."}'


def _request(raw: str) -> EscalationRequest:
    return EscalationRequest.model_validate_json(raw)


@pytest.mark.parametrize(
    "value",
    ["a", "x" * 255, "8e03978e-40d5-43e8-bc93-6894a57f9324", '"quoted, spaced ~!"'],
    ids=["one-char", "255-chars", "uuid", "any-printable"],
)
def test_printable_ascii_up_to_255_characters_is_a_key(value: str) -> None:
    assert parse_key([value]) == value


def test_no_header_is_no_key() -> None:
    assert parse_key([]) is None


@pytest.mark.parametrize(
    "values",
    [[""], ["x" * 256], ["caf\u00e9"], ["tab\there"], ["nul\x00"], ["del\x7f"], ["a", "b"]],
    ids=["empty", "256-chars", "not-ascii", "tab", "nul", "del", "two-headers"],
)
def test_anything_else_is_a_400(values: list[str]) -> None:
    with pytest.raises(Problem) as raised:
        parse_key(values)
    assert raised.value.status == 400
    assert "Idempotency-Key" in raised.value.detail


def test_the_scope_is_a_sha256_of_the_api_key_never_the_key() -> None:
    scope = scope_of("secret-api-key-0123456789")
    assert scope == hashlib.sha256(b"secret-api-key-0123456789").hexdigest()
    assert scope != scope_of("secret-api-key-0123456780")
    assert scope_of(None) == ANONYMOUS


def test_the_fingerprint_ignores_key_order_spacing_and_spelt_out_defaults() -> None:
    reordered = '{ "summary":"Hi.",\n "reason_code": "billing_dispute", "conversation_id":"CA1" }'
    explicit = BODY[:-1] + ', "channel": "chat", "context": {}}'
    assert fingerprint(_request(BODY)) == fingerprint(_request(reordered))
    assert fingerprint(_request(BODY)) == fingerprint(_request(explicit))


@pytest.mark.parametrize(
    "changed",
    [
        BODY.replace("Hi.", "Hi!"),
        BODY.replace("CA1", "CA2"),
        BODY[:-1] + ', "channel": "sms"}',
        BODY[:-1] + ', "context": {"a": 1}}',
    ],
    ids=["summary", "conversation", "channel", "context"],
)
def test_the_fingerprint_changes_with_the_request(changed: str) -> None:
    assert fingerprint(_request(BODY)) != fingerprint(_request(changed))


def test_a_reused_key_is_a_422_and_a_key_in_flight_a_409_with_retry_after() -> None:
    with pytest.raises(Problem) as reused:
        answered(KeyedCreation(IdempotencyResult.MISMATCH))
    assert (reused.value.status, reused.value.kind) == (422, KEY_REUSED)
    with pytest.raises(Problem) as in_flight:
        answered(KeyedCreation(IdempotencyResult.CONFLICT))
    assert (in_flight.value.status, in_flight.value.kind) == (409, IN_FLIGHT)
    assert in_flight.value.headers == {"Retry-After": "1"}


def test_new_and_replayed_keys_answer_their_escalation() -> None:
    value = escalation()
    assert answered(KeyedCreation(IdempotencyResult.NEW, value, True)) == (value, True)
    assert answered(KeyedCreation(IdempotencyResult.REPLAYED, value)) == (value, False)


def test_the_ttl_comes_from_its_variable_and_must_be_positive() -> None:
    assert load_settings({}).idempotency_ttl == 86_400
    assert load_settings({"ESCALATOR_IDEMPOTENCY_TTL_SECONDS": "600"}).idempotency_ttl == 600
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigurationError, match="ESCALATOR_IDEMPOTENCY_TTL_SECONDS"):
            load_settings({"ESCALATOR_IDEMPOTENCY_TTL_SECONDS": bad})
