"""Builders of domain values for unit tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from escalator.domain.escalation import Escalation, new_escalation
from escalator.domain.ids import EscalationId
from escalator.domain.request import EscalationRequest
from escalator.routing import load_routing

NOW = datetime(2026, 11, 25, 9, 0, 0, tzinfo=UTC)
_ROUTING = load_routing()


def escalation(**fields: Any) -> Escalation:
    """A received escalation; ``fields`` override the request's."""
    body: dict[str, Any] = {
        "conversation_id": "CA0123",
        "reason_code": "billing_dispute",
        "summary": "Customer disputes a charge.",
        **fields,
    }
    request = EscalationRequest.model_validate(body)
    return new_escalation(
        request,
        _ROUTING.route(request.reason_code),
        escalation_id=EscalationId("esc_0123456789abcdef0123456789abcdef"),
        now=NOW,
    )
