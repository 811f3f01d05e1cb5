"""LISTEN/NOTIFY between replicas on one PostgreSQL: changes and owed work are heard at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from escalator.api import Dependencies, create_app
from escalator.domain.ids import EscalationId
from escalator.metrics import Metrics
from escalator.routing import load_routing
from escalator.store.feed import ChangeFeed
from escalator.store.migrate import head_revision
from escalator.store.notify import ChangeListener, change_listener, connector
from escalator.store.sql import SqlStore, open_store
from escalator.taskrouter import TaskRouterClient
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, Sim
from tests.integration.conftest import (
    API_KEY,
    FakeClock,
    ServiceFactory,
    free_port,
    make_settings,
)
from tests.integration.test_store_handoff import RecordingHandoff
from tests.integration.test_store_handoff import numbered as _numbered
from tests.integration.webhooks import body, escalate, post_signed

AUTH = {"Authorization": f"Bearer {API_KEY}"}
# Far below the streams' poll and heartbeat in these tests (30 s, 60 s): only a notification
# can explain a change seen within it.
DEADLINE = 5.0


class _HeardFeed(ChangeFeed):
    """A change feed that remembers every id published to it."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[EscalationId] = []
        self.published = asyncio.Event()

    def publish(self, escalation_id: EscalationId) -> None:
        self.ids.append(escalation_id)
        self.published.set()
        super().publish(escalation_id)


async def _until(condition: Callable[[], bool], event: asyncio.Event) -> None:
    """Wait, at most DEADLINE seconds, until ``condition`` holds; ``event`` is set on news."""
    async with asyncio.timeout(DEADLINE):
        while not condition():
            event.clear()
            await event.wait()


@dataclass
class Replica:
    """Replica B: its own store, and a listener whose wake-ups the test watches."""

    store: SqlStore
    listener: ChangeListener
    feed: _HeardFeed
    woken: asyncio.Event
    metrics: Metrics

    def sample(self, name: str, **labels: str) -> float:
        return float(self.metrics.registry.get_sample_value(name, labels) or 0.0)


@pytest.fixture
async def replica(postgres_url: str) -> AsyncIterator[Replica]:
    store = await open_store(postgres_url)
    feed, woken, metrics = _HeardFeed(), asyncio.Event(), Metrics()
    listener = ChangeListener(
        connect=connector(store.engine),
        changes=feed,
        metrics=metrics,
        on_outbox=woken.set,
    )
    running = asyncio.create_task(listener.run())
    try:
        async with asyncio.timeout(DEADLINE):
            await listener.wait_listening()
        # Listening begins with one wake-up for what may have been missed; start from quiet.
        woken.clear()
        yield Replica(store, listener, feed, woken, metrics)
    finally:
        listener.stop()
        async with asyncio.timeout(DEADLINE):
            await running
        await store.close()


async def test_an_escalation_created_on_one_replica_wakes_the_other(
    service_factory: ServiceFactory, postgres_url: str, replica: Replica
) -> None:
    a = await service_factory(database_url=postgres_url)
    response = await a.post(body("across-replicas"))
    assert response.status == 201, await response.text()
    escalation_id = EscalationId((await response.json())["id"])

    await _until(lambda: escalation_id in replica.feed.ids, replica.feed.published)
    async with asyncio.timeout(DEADLINE):
        await replica.woken.wait()
    assert replica.sample("escalator_notifications_total", channel="changes") >= 1
    assert replica.sample("escalator_notifications_total", channel="outbox") >= 1


async def test_only_saved_changes_are_announced_not_the_reconcilers_claims(
    service_factory: ServiceFactory, postgres_url: str, replica: Replica
) -> None:
    a = await service_factory(database_url=postgres_url)
    quiet = await escalate(a, "claimed-only")
    await _until(lambda: quiet in replica.feed.ids, replica.feed.published)
    replica.feed.ids.clear()

    await a.store.reconcile_later(EscalationId(quiet), at=a.clock() + timedelta(minutes=5))
    # Notifications arrive in commit order: once the next escalation is heard, a notification
    # of the claim would have been heard before it.
    later = await escalate(a, "after-the-claim")
    await _until(lambda: later in replica.feed.ids, replica.feed.published)
    assert quiet not in replica.feed.ids


async def test_a_create_row_handed_to_its_own_dispatcher_wakes_no_other(
    postgres_url: str, replica: Replica
) -> None:
    a = await open_store(postgres_url)
    try:
        a.hand_new_work_to(RecordingHandoff(room=1))
        handed, _ = await a.create_escalation(_numbered(1))
        a.hand_new_work_to(None)
        unleased, _ = await a.create_escalation(_numbered(2))
        # In commit order: once the second escalation is heard, the first one's outbox
        # notification, had there been one, would have been heard before it.
        await _until(lambda: unleased.id in replica.feed.ids, replica.feed.published)
        assert handed.id in replica.feed.ids
        assert replica.sample("escalator_notifications_total", channel="outbox") == 1
    finally:
        await a.close()


async def test_leases_given_back_wake_the_other_dispatchers(
    service_factory: ServiceFactory, postgres_url: str, replica: Replica
) -> None:
    a = await service_factory(database_url=postgres_url)
    response = await a.post(body("given-back"))
    assert response.status == 201, await response.text()
    async with asyncio.timeout(DEADLINE):
        await replica.woken.wait()
    leased = await a.store.lease_outbox(
        owner="replica-a", now=a.clock(), lease_for=timedelta(seconds=30), limit=10
    )
    assert len(leased) == 1
    replica.woken.clear()

    assert await a.store.release_leases(owner="replica-a") == 1  # replica A shuts down

    async with asyncio.timeout(DEADLINE):
        await replica.woken.wait()


async def test_the_listener_reconnects_after_its_connection_is_terminated(
    service_factory: ServiceFactory, postgres_url: str, replica: Replica
) -> None:
    pid = replica.listener.backend_pid
    assert pid is not None
    followed = EscalationId("esc_followed_by_a_stream")
    with replica.feed.subscribe(followed) as changed:
        admin = await asyncpg.connect(postgres_url)
        try:
            # Its own backend only: other tests' sessions on this server are left alone.
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()

        # Connected again, it wakes the dispatcher and every stream: what was notified while
        # nobody listened is lost.
        async with asyncio.timeout(DEADLINE):
            await replica.woken.wait()
        assert changed.is_set()
    assert replica.listener.backend_pid not in (None, pid)
    assert replica.sample("escalator_listener_reconnects_total") == 1
    assert replica.sample("escalator_listener_failures_total", kind="lost") == 1

    a = await service_factory(database_url=postgres_url)
    response = await a.post(body("after-the-reconnect"))
    assert response.status == 201, await response.text()
    escalation_id = EscalationId((await response.json())["id"])
    await _until(lambda: escalation_id in replica.feed.ids, replica.feed.published)


@pytest.fixture
async def app_factory(
    sim: Sim,
) -> AsyncIterator[Callable[..., Any]]:
    """Starts the whole app, background loops included (dispatch=True), on a real socket."""
    opened: list[tuple[TestClient[web.Request, web.Application], TaskRouterClient, SqlStore]] = []

    async def start(
        database_url: str, clock: FakeClock | None = None, **overrides: object
    ) -> TestClient[web.Request, web.Application]:
        port = free_port()
        settings = make_settings(
            sim, database_url=database_url, public_url=f"http://127.0.0.1:{port}", **overrides
        )
        store = await open_store(database_url)
        taskrouter = TaskRouterClient(
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            workspace_sid=sim.workspace.workspace_sid,
            base_url=sim.url,
            timeout=5,
        )
        app = create_app(
            settings,
            routing=load_routing(settings.routing_file),
            deps=Dependencies(
                store=store, taskrouter=taskrouter, clock=clock or FakeClock(), dispatch=True
            ),
        )
        client = TestClient(TestServer(app, host="127.0.0.1", port=port))
        opened.append((client, taskrouter, store))
        await client.start_server()
        return client

    yield start
    for client, taskrouter, store in opened:
        await client.close()
        await taskrouter.close()
        await store.close()


def _running_loops() -> set[str]:
    return {task.get_name() for task in asyncio.all_tasks()}


async def test_a_stream_on_one_replica_sees_a_change_applied_through_another_at_once(
    postgres_url: str,  # first: its database is dropped after the apps on it have stopped
    service_factory: ServiceFactory,
    app_factory: Callable[..., Any],
) -> None:
    a = await service_factory(database_url=postgres_url)
    escalation_id = await escalate(a, "streamed-across")  # its task is created by A
    task_sid = (await a.get(escalation_id))["task_sid"]

    b = await app_factory(
        postgres_url,
        clock=a.clock,  # the escalation is not stale: B's reconciler leaves it alone
        stream_poll_seconds=30,
        stream_heartbeat_seconds=60,
        dispatch_interval=30,
        reconcile_interval=3600,
    )
    assert "change-listener" in _running_loops()
    response = await b.get(f"/escalations/{escalation_id}/stream", headers=AUTH)
    assert response.status == 200
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), DEADLINE)
    assert b'"status":"queued"' in first

    # TaskRouter tells replica A that the task was canceled: no outbox row, so nothing wakes
    # B's dispatcher; only the notification of A's commit can bring it to B's stream in time.
    event = {
        "EventType": "task.canceled",
        "TaskSid": task_sid,
        "ResourceSid": task_sid,
        "Timestamp": "1795600000",
        "TaskAttributes": f'{{"escalation_id": "{escalation_id}"}}',
        "TaskCanceledReason": "Task TTL Exceeded",
    }
    assert (await post_signed(a, "/taskrouter/events", event)).status == 204

    seen = await asyncio.wait_for(response.content.readuntil(b"\n\n"), DEADLINE)
    assert b'"status":"canceled"' in seen


async def test_sqlite_gets_no_triggers_and_starts_no_listener(
    sqlite_url: str, app_factory: Callable[..., Any]
) -> None:
    store = await open_store(sqlite_url)
    try:
        async with store.engine.connect() as connection:
            triggers = await connection.scalar(
                sa.text("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'")
            )
            revision = await connection.scalar(sa.text("SELECT version_num FROM alembic_version"))
        assert triggers == 0
        assert revision == head_revision() == "0006"
        assert change_listener(store, metrics=Metrics()) is None
    finally:
        await store.close()

    await app_factory(sqlite_url)
    loops = _running_loops()
    assert "dispatcher" in loops
    assert "change-listener" not in loops
