"""Fixtures of the service's integration tests: the app on a real socket over a real store."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from escalator.api import Dependencies, create_app
from escalator.dispatcher import Dispatcher
from escalator.metrics import Metrics
from escalator.routing import load_routing
from escalator.settings import Settings, load_settings
from escalator.store.sql import SqlStore, open_store
from escalator.taskrouter import TaskRouterClient
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, Sim

API_KEY = "test-api-key-0123456789abcdef"


@dataclass
class FakeClock:
    """A clock that moves only when told to."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 25, 9, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Service:
    """The app on a real socket, its store, a dispatcher to turn by hand, and the simulator."""

    client: TestClient[web.Request, web.Application]
    store: SqlStore
    dispatcher: Dispatcher
    taskrouter: TaskRouterClient
    sim: Sim
    clock: FakeClock
    waits: list[float]
    metrics: Metrics
    public_url: str

    async def post(self, body: dict[str, Any], **headers: str) -> Any:
        return await self.client.post(
            "/escalations", json=body, headers={"Authorization": f"Bearer {API_KEY}", **headers}
        )

    async def get(self, escalation_id: str) -> Any:
        response = await self.client.get(
            f"/escalations/{escalation_id}", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert response.status == 200, await response.text()
        return await response.json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(sim: Sim, **overrides: object) -> Settings:
    return load_settings(
        {},
        api_keys=API_KEY,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        workspace_sid=sim.workspace.workspace_sid,
        workflow_sid=sim.workspace.workflow_sid,
        taskrouter_url=sim.url,
        **overrides,
    )


ServiceFactory = Callable[..., Awaitable[Service]]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    """The store on each database, migrated (the store contract tests)."""
    opened = await open_store(database_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def service_factory(sim: Sim, sqlite_url: str) -> AsyncIterator[ServiceFactory]:
    """Builds the service; the dispatcher is not looping: tests call ``run_once``."""
    opened: list[tuple[TestClient[web.Request, web.Application], SqlStore, TaskRouterClient]] = []

    async def build(database_url: str = sqlite_url, **overrides: object) -> Service:
        port = free_port()
        overrides.setdefault("public_url", f"http://127.0.0.1:{port}")
        settings = make_settings(sim, database_url=database_url, **overrides)
        store = await open_store(database_url)
        taskrouter = TaskRouterClient(
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            workspace_sid=sim.workspace.workspace_sid,
            base_url=sim.url,
            timeout=5,
        )
        clock, waits, metrics = FakeClock(), [], Metrics()

        async def no_sleep(seconds: float) -> None:
            waits.append(seconds)

        dispatcher = Dispatcher(
            call_timeout=5,
            store=store,
            taskrouter=taskrouter,
            workflow_sid=sim.workspace.workflow_sid,
            clock=clock,
            metrics=metrics,
            owner="test",
            sleep=no_sleep,
        )
        app = create_app(
            settings,
            routing=load_routing(settings.routing_file),
            deps=Dependencies(
                store=store, taskrouter=taskrouter, clock=clock, metrics=metrics, dispatch=False
            ),
        )
        client = TestClient(TestServer(app, host="127.0.0.1", port=port))
        await client.start_server()
        opened.append((client, store, taskrouter))
        return Service(
            client,
            store,
            dispatcher,
            taskrouter,
            sim,
            clock,
            waits,
            metrics,
            settings.effective_public_url,
        )

    yield build
    for client, store, taskrouter in opened:
        await client.close()
        await taskrouter.close()
        await store.close()


@pytest.fixture
async def service(service_factory: ServiceFactory) -> Service:
    return await service_factory()
