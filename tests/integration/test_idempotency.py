"""``Idempotency-Key`` on POST /escalations, over a real socket, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from escalator.api import Dependencies, create_app
from escalator.api.idempotency import fingerprint, scope_of
from escalator.domain.request import EscalationRequest
from escalator.routing import load_routing
from escalator.store.schema import escalations, idempotency_keys, outbox
from escalator.store.sql import SqlStore, open_store
from tests.conftest import Sim
from tests.integration.conftest import API_KEY, Service, ServiceFactory, make_settings

BODY: dict[str, Any] = {
    "conversation_id": "conv-idempotent",
    "reason_code": "billing_dispute",
    "summary": "Customer disputes a charge and asks for a person.",
    "customer": {"name": "Ada", "language": "en"},
    "context": {"order-id": "A1", "amount": 42},
}
KEY = "8e03978e-40d5-43e8-bc93-6894a57f9324"
OTHER_API_KEY = "another-api-key-fedcba9876543210"


@dataclass
class TwoKeys:
    client: TestClient[web.Request, web.Application]
    store: SqlStore


async def _rows(service: Service | TwoKeys, table: sa.Table) -> int:
    async with service.store.engine.connect() as connection:
        return int(await connection.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


async def _post(
    service: Service | TwoKeys, body: object, key: str | None = KEY, api_key: str = API_KEY
) -> Any:
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    data = body if isinstance(body, str) else json.dumps(body)
    return await service.client.post("/escalations", data=data, headers=headers)


async def _problem(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    problem = dict(await response.json())
    assert problem["type"] == f"urn:escalator:problem:{kind}"
    assert problem["status"] == status
    return problem


@pytest.fixture
async def service(service_factory: ServiceFactory, database_url: str) -> Service:
    return await service_factory(database_url)


@pytest.fixture
async def two_keys(sim: Sim, database_url: str) -> AsyncIterator[TwoKeys]:
    """The service accepting two API keys (the service factory's settings have one)."""
    keys = (SecretStr(API_KEY), SecretStr(OTHER_API_KEY))
    settings = make_settings(sim, database_url=database_url).model_copy(update={"api_keys": keys})
    store = await open_store(database_url)
    deps = Dependencies(store=store, dispatch=False)
    app = create_app(settings, routing=load_routing(), deps=deps)
    try:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield TwoKeys(client, store)
    finally:
        await store.close()


async def test_a_retry_replays_the_escalation_as_it_is_now_without_a_second_task(
    service: Service,
) -> None:
    first = await _post(service, BODY)
    assert first.status == 201, await first.text()
    created = await first.json()
    assert "Idempotent-Replayed" not in first.headers
    assert await service.dispatcher.run_once() == 1
    # The same request, its keys in another order and spaced differently.
    reordered = json.dumps(dict(reversed(BODY.items())), indent=2)
    again = await _post(service, reordered)
    assert again.status == 200, await again.text()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Content-Location"] == f"/escalations/{created['id']}"
    replayed = await again.json()
    assert replayed == await service.get(created["id"])
    assert (replayed["id"], replayed["status"]) == (created["id"], "queued")
    assert replayed["task_sid"] is not None
    assert await _rows(service, escalations) == 1
    assert await service.dispatcher.run_once() == 0
    workspace = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    assert len(await workspace.tasks.list_async()) == 1


async def test_the_same_key_with_another_body_is_422_and_records_nothing(
    service: Service,
) -> None:
    assert (await _post(service, BODY)).status == 201
    other = {**BODY, "conversation_id": "conv-other", "summary": "Another request."}
    problem = await _problem(await _post(service, other), 422, "idempotency-key-reused")
    assert "Idempotency-Key" in problem["detail"]
    assert await _rows(service, escalations) == 1
    assert await service.store.outbox_backlog() == 1


async def test_keys_are_scoped_to_the_api_key_that_sent_them(two_keys: TwoKeys) -> None:
    mine = await _post(two_keys, BODY)
    theirs = await _post(two_keys, {**BODY, "conversation_id": "conv-2"}, api_key=OTHER_API_KEY)
    assert (mine.status, theirs.status) == (201, 201)
    assert (await mine.json())["id"] != (await theirs.json())["id"]
    replayed = await _post(two_keys, {**BODY, "conversation_id": "conv-2"}, api_key=OTHER_API_KEY)
    assert (await replayed.json())["id"] == (await theirs.json())["id"]
    async with two_keys.store.engine.connect() as connection:
        scopes = set((await connection.execute(sa.select(idempotency_keys.c.scope))).scalars())
    assert scopes == {scope_of(API_KEY), scope_of(OTHER_API_KEY)}
    assert not any(API_KEY in scope or OTHER_API_KEY in scope for scope in scopes)


async def test_a_key_first_used_on_an_open_conversation_replays_that_escalation(
    service: Service,
) -> None:
    existing = await (await _post(service, BODY, key=None)).json()
    first = await _post(service, BODY)
    assert first.status == 200
    assert "Idempotent-Replayed" not in first.headers
    cancel = await service.client.post(
        f"/escalations/{existing['id']}/cancel", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert cancel.status == 200
    # The conversation is closed now, yet the key still answers what it answered first.
    again = await _post(service, BODY)
    assert again.status == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert ((await again.json())["id"], (await again.json())["status"]) == (
        existing["id"],
        "canceled",
    )
    assert await _rows(service, escalations) == 1


async def test_an_expired_key_is_forgotten_and_expired_rows_are_purged(
    service_factory: ServiceFactory, database_url: str
) -> None:
    service = await service_factory(database_url, idempotency_ttl=60)
    for number in range(3):
        body = {**BODY, "conversation_id": f"conv-{number}"}
        assert (await _post(service, body, key=f"key-{number}")).status == 201
    service.clock.advance(59)
    replay = await _post(service, {**BODY, "conversation_id": "conv-0"}, key="key-0")
    assert replay.headers["Idempotent-Replayed"] == "true"
    service.clock.advance(1)
    reused = await _post(service, {**BODY, "conversation_id": "conv-new"}, key="key-0")
    assert reused.status == 201, await reused.text()
    assert await _rows(service, escalations) == 4
    assert await _rows(service, idempotency_keys) == 1


async def test_concurrent_posts_with_one_key_create_one_escalation(service: Service) -> None:
    responses = await asyncio.gather(*(_post(service, BODY) for _ in range(8)))
    statuses = sorted(response.status for response in responses)
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {200, 201, 409}, statuses
    ids = set()
    for response in responses:
        if response.status == 200:
            assert response.headers["Idempotent-Replayed"] == "true"
        if response.status != 409:
            ids.add((await response.json())["id"])
    assert len(ids) == 1
    assert await _rows(service, escalations) == 1
    assert await _rows(service, outbox) == 1
    assert await _rows(service, idempotency_keys) == 1


async def test_a_key_in_flight_on_another_replica_is_409_until_it_commits(
    service_factory: ServiceFactory, postgres_url: str
) -> None:
    """PostgreSQL only: SQLite has one writer, so no request ever sees another in flight."""
    service = await service_factory(postgres_url)
    claimed = sa.insert(idempotency_keys).values(
        scope=scope_of(API_KEY),
        key=KEY,
        fingerprint=fingerprint(EscalationRequest.model_validate(BODY)),
        escalation_id="esc_" + "f" * 32,
        created_at=service.clock(),
        expires_at=service.clock() + timedelta(days=1),
    )
    # Another replica's request, mid-transaction: it has claimed the key, not yet committed.
    async with service.store.engine.connect() as other:
        await other.execute(claimed)
        started = time.monotonic()
        response = await _post(service, BODY)
        waited = time.monotonic() - started
        await other.rollback()
    problem = await _problem(response, 409, "request-in-flight")
    assert "still being processed" in problem["detail"]
    assert response.headers["Retry-After"] == "1"
    assert waited >= 0.9  # it waited for the other transaction before giving up
    assert await _rows(service, escalations) == 0
    retried = await _post(service, BODY)
    assert retried.status == 201, await retried.text()


@pytest.mark.parametrize(
    "key",
    ["x" * 256, "caf\u00e9"],
    ids=["too-long", "not-ascii"],
)
async def test_a_malformed_key_is_400_and_records_nothing(service: Service, key: str) -> None:
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "Content-Type": "application/json",
        "Idempotency-Key": key,
    }
    response = await service.client.post("/escalations", data=json.dumps(BODY), headers=headers)
    problem = await _problem(response, 400, "malformed-request")
    assert "Idempotency-Key" in problem["detail"]
    assert await _rows(service, escalations) == 0


async def test_outcomes_are_counted(service: Service) -> None:
    await _post(service, BODY)
    await _post(service, BODY)
    await _post(service, {**BODY, "summary": "changed"})
    await _post(service, BODY, key=None)
    text = await (await service.client.get("/metrics")).text()
    assert 'escalator_idempotency_total{result="new"} 1.0' in text
    assert 'escalator_idempotency_total{result="replayed"} 1.0' in text
    assert 'escalator_idempotency_total{result="mismatch"} 1.0' in text
