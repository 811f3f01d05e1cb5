"""POST and GET /escalations over a real socket: acks, and every error as problem+json."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.conftest import API_KEY, Service

BODY = {
    "conversation_id": "CA0123",
    "reason_code": "billing_dispute",
    "summary": "Customer disputes a charge and asks for a person.",
    "channel": "voice",
    "customer": {"name": "Ada", "phone": "+15558675310", "language": "en"},
    "context": {"order-id": "A1"},
}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:escalator:problem:")
    assert body["title"]
    assert body["detail"]
    return dict(body)


async def test_a_new_escalation_is_acknowledged_after_commit(service: Service) -> None:
    response = await service.post(BODY)
    assert response.status == 201
    body = await response.json()
    assert response.headers["Location"] == f"/escalations/{body['id']}"
    assert body["status"] == "received"
    assert body["task_sid"] is None
    assert body["department"] == "billing"
    assert body["priority"] == 50
    stored = await service.store.get_escalation(body["id"])
    assert stored is not None
    assert stored.summary == BODY["summary"]
    assert await service.store.outbox_backlog() == 1


async def test_duplicate_conversation_returns_existing_escalation(service: Service) -> None:
    first = await (await service.post(BODY)).json()
    again = await service.post({**BODY, "summary": "a retry of the same tool call"})
    assert again.status == 200
    body = await again.json()
    assert body["id"] == first["id"]
    assert body["summary"] == BODY["summary"]
    assert again.headers["Content-Location"] == f"/escalations/{first['id']}"
    assert await service.store.outbox_backlog() == 1


async def test_unknown_reason_codes_take_the_default_route_flagged(service: Service) -> None:
    body = await (await service.post({**BODY, "reason_code": "alien_abduction"})).json()
    assert body["reason_known"] is False
    assert body["reason_code"] == "alien_abduction"
    assert body["department"] == "general"


async def test_get_returns_the_escalation_with_its_history(service: Service) -> None:
    created = await (await service.post(BODY)).json()
    body = await service.get(created["id"])
    assert body == created
    assert body["history"][0]["event"] == "escalation.received"


async def test_get_of_an_unknown_id_is_404(service: Service) -> None:
    response = await service.client.get("/escalations/esc_nope", headers=AUTH)
    problem = await _problem(response, 404)
    assert problem["instance"] == "/escalations/esc_nope"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-0123456789"},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": "Bearer "},
    ],
    ids=["missing", "wrong", "not-bearer", "empty"],
)
async def test_a_bad_api_key_is_401(service: Service, headers: dict[str, str]) -> None:
    response = await service.client.post("/escalations", json=BODY, headers=headers)
    await _problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = await service.client.get("/escalations/esc_x", headers=headers)
    await _problem(response, 401)


async def test_malformed_json_is_400(service: Service) -> None:
    response = await service.client.post(
        "/escalations",
        data=b'{"conversation_id": ',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    await _problem(response, 400)


async def test_a_wrong_content_type_is_415(service: Service) -> None:
    response = await service.client.post(
        "/escalations", data=json.dumps(BODY), headers={**AUTH, "Content-Type": "text/plain"}
    )
    await _problem(response, 415)


async def test_a_body_over_the_limit_is_413(service: Service) -> None:
    response = await service.post({**BODY, "context": {"blob": "x" * 70_000}})
    await _problem(response, 413)


async def test_a_streamed_body_over_the_limit_is_413(service: Service) -> None:
    async def chunks() -> Any:
        for _ in range(80):
            yield b" " * 1024

    response = await service.client.post(
        "/escalations", data=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )
    await _problem(response, 413)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"conversation_id": None}, "conversation_id"),
        ({"summary": ""}, "summary"),
        ({"channel": "fax"}, "channel"),
        ({"customer": {"phone": "12"}}, "customer.phone"),
        ({"surprise": True}, "surprise"),
        ({"context": {"x": float("nan")}}, "context"),
    ],
    ids=["missing", "empty-summary", "bad-enum", "bad-phone", "unknown-field", "nan"],
)
async def test_invalid_fields_are_422_naming_the_field(
    service: Service, change: dict[str, Any], field: str
) -> None:
    body = {key: value for key, value in {**BODY, **change}.items() if value is not None}
    problem = await _problem(await service.post(body), 422)
    assert field in [error["field"] for error in problem["errors"]]
    assert await service.store.outbox_backlog() == 0


async def test_a_json_array_is_422(service: Service) -> None:
    response = await service.client.post(
        "/escalations", data="[]", headers={**AUTH, "Content-Type": "application/json"}
    )
    await _problem(response, 422)


async def test_unknown_routes_and_methods_are_problems(service: Service) -> None:
    await _problem(await service.client.get("/nope", headers=AUTH), 404)
    await _problem(await service.client.delete("/escalations", headers=AUTH), 405)


async def test_health_ready_and_metrics(service: Service) -> None:
    assert (await service.client.get("/healthz")).status == 200
    assert (await service.client.get("/readyz")).status == 200
    await service.post(BODY)
    text = await (await service.client.get("/metrics")).text()
    assert 'escalator_escalations_received_total{result="created"} 1.0' in text
    assert "escalator_outbox_backlog 1.0" in text
    assert 'escalator_outbox_backlog_by_kind{kind="create_task"} 1.0' in text
    assert 'escalator_outbox_backlog_by_kind{kind="cancel_task"} 0.0' in text
