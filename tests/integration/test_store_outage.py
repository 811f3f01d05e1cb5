"""A database that goes away answers 503 with Retry-After, never 500 or an ack without a commit;
when it comes back the service recovers by itself, without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from escalator.reconciler import Reconciler
from escalator.routing import load_routing
from tests.integration.conftest import API_KEY, Service, ServiceFactory
from tests.integration.test_api import BODY
from tests.integration.webhooks import metric, post_signed

AUTH = {"Authorization": f"Bearer {API_KEY}"}
# PostgreSQL's SSLRequest and GSSENCRequest codes: asked before the startup message.
_ENCRYPTION_REQUESTS = (80877103, 80877104)


def _error_response(sqlstate: str, message: str) -> bytes:
    """A FATAL ErrorResponse message of PostgreSQL's wire protocol."""
    fields = (("S", "FATAL"), ("V", "FATAL"), ("C", sqlstate), ("M", message))
    body = b"".join(kind.encode() + text.encode() + b"\0" for kind, text in fields) + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


class TcpProxy:
    """Forwards a local port to PostgreSQL. ``cut()`` is the database becoming unreachable
    (connections dropped, new ones refused), ``starting_up()`` is PostgreSQL restarting
    (connections dropped, new ones refused with SQLSTATE 57P03), ``restore()`` brings it back
    on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._starting_up = False

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self._port)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._starting_up:
            with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
                await self._refuse_as_starting_up(reader, writer)
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    async def _refuse_as_starting_up(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            (length,) = struct.unpack("!i", await reader.readexactly(4))
            (code,) = struct.unpack("!i", (await reader.readexactly(length - 4))[:4])
            if code not in _ENCRYPTION_REQUESTS:
                break
            writer.write(b"N")  # no TLS: the client goes on in plain text
        writer.write(_error_response("57P03", "the database system is starting up"))
        await writer.drain()

    def _drop_connections(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def cut(self) -> None:
        self._drop_connections()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def starting_up(self) -> None:
        self._starting_up = True
        self._drop_connections()

    async def restore(self) -> None:
        self._starting_up = False
        if self._server is None:
            await self.start()


@pytest.fixture
async def proxied_postgres(postgres_url: str) -> AsyncIterator[tuple[str, TcpProxy]]:
    parts = urlsplit(postgres_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await proxy.start()
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    yield urlunsplit(parts._replace(netloc=netloc)), proxy
    await proxy.cut()


async def _status(service: Service, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """Each answer must be a success or a 503 problem with Retry-After, never a 500."""
    response = await service.client.request(method, path, **kwargs)
    if response.status == 503:
        assert response.content_type == "application/problem+json", path
        assert response.headers["Retry-After"].isdigit(), path
    assert response.status < 500 or response.status == 503, (path, await response.text())
    if response.content_type.endswith("json"):
        return response.status, await response.json()
    return response.status, None


def _event(escalation_id: str, task_sid: str) -> dict[str, str]:
    return {
        "EventType": "task.canceled",
        "TaskSid": task_sid,
        "ResourceSid": task_sid,
        "Timestamp": "1795600000",
        "TaskAttributes": f'{{"escalation_id": "{escalation_id}"}}',
        "TaskCanceledReason": "Task TTL Exceeded",
    }


async def _every_endpoint(service: Service, escalation_id: str, task_sid: str) -> list[int]:
    """What the API answers, endpoint by endpoint, for a new and an existing escalation."""
    new = {**BODY, "conversation_id": "d"}
    statuses = [
        (await _status(service, "POST", "/escalations", json=new, headers=AUTH))[0],
        (await _status(service, "GET", f"/escalations/{escalation_id}", headers=AUTH))[0],
        (await _status(service, "GET", "/escalations?conversation_id=d", headers=AUTH))[0],
        (await _status(service, "GET", "/readyz"))[0],
    ]
    event = await post_signed(service, "/taskrouter/events", _event(escalation_id, task_sid))
    assert event.status in {204, 503}, await event.text()
    if event.status == 503:
        assert event.content_type == "application/problem+json"
        assert event.headers["Retry-After"].isdigit()
    return [*statuses, event.status]


async def _escalate_with_task(service: Service, conversation_id: str) -> tuple[str, str]:
    response = await service.post({**BODY, "conversation_id": conversation_id})
    assert response.status == 201, await response.text()
    escalation_id = str((await response.json())["id"])
    assert await service.dispatcher.run_once() == 1
    return escalation_id, (await service.get(escalation_id))["task_sid"]


async def _until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        await asyncio.sleep(0.02)


async def test_an_unreachable_database_gives_503_and_no_ack(
    service_factory: ServiceFactory, proxied_postgres: tuple[str, TcpProxy]
) -> None:
    url, proxy = proxied_postgres
    service = await service_factory(database_url=url)
    escalation_id, task_sid = await _escalate_with_task(service, "before")
    await proxy.cut()

    assert await _every_endpoint(service, escalation_id, task_sid) == [503] * 5
    assert (await service.client.get("/healthz")).status == 200
    assert (await service.client.get("/metrics")).status == 200

    await proxy.restore()
    # Nothing was acknowledged, nothing was stored: the conversation has no escalation.
    status, page = await _status(service, "GET", "/escalations?conversation_id=d", headers=AUTH)
    assert (status, page["items"]) == (200, [])


async def test_the_service_recovers_without_a_restart_when_the_database_is_back(
    service_factory: ServiceFactory, proxied_postgres: tuple[str, TcpProxy]
) -> None:
    url, proxy = proxied_postgres
    service = await service_factory(database_url=url)
    escalation_id, task_sid = await _escalate_with_task(service, "before")
    await proxy.cut()
    assert (await _status(service, "GET", "/readyz"))[0] == 503

    await proxy.restore()

    # The pool's connections died with the cut: each is replaced, none is used broken.
    assert await _every_endpoint(service, escalation_id, task_sid) == [201, 200, 200, 200, 204]
    assert (await service.get(escalation_id))["status"] == "canceled"


async def test_a_restarting_database_gives_503_then_recovers(
    service_factory: ServiceFactory, proxied_postgres: tuple[str, TcpProxy]
) -> None:
    url, proxy = proxied_postgres
    service = await service_factory(database_url=url)
    escalation_id, task_sid = await _escalate_with_task(service, "before")

    # What PostgreSQL answers while it restarts: "the database system is starting up".
    proxy.starting_up()
    assert await _every_endpoint(service, escalation_id, task_sid) == [503] * 5

    await proxy.restore()
    assert await _every_endpoint(service, escalation_id, task_sid) == [201, 200, 200, 200, 204]


async def test_connections_the_server_terminated_are_replaced_before_use(
    service_factory: ServiceFactory, postgres_url: str
) -> None:
    service = await service_factory(database_url=postgres_url)
    escalation_id, task_sid = await _escalate_with_task(service, "before")
    # A restart (or an administrator) ends every session: SQLSTATE 57P01 on each connection.
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()

    assert await _every_endpoint(service, escalation_id, task_sid) == [201, 200, 200, 200, 204]


async def test_the_background_loops_outlive_an_outage(
    service_factory: ServiceFactory, proxied_postgres: tuple[str, TcpProxy]
) -> None:
    url, proxy = proxied_postgres
    service = await service_factory(database_url=url)
    await _escalate_with_task(service, "stale")
    service.clock.advance(120)  # silent long enough for the reconciler to re-read it
    reconciler = Reconciler(
        store=service.store,
        taskrouter=service.taskrouter,
        clock=service.clock,
        metrics=service.metrics,
        cascade=load_routing().file.cascade,
        interval=0.05,
    )
    await proxy.cut()
    loops = [
        asyncio.create_task(service.dispatcher.run()),
        asyncio.create_task(reconciler.run()),
    ]
    for where in ("dispatcher", "reconciler"):
        await _until(
            lambda where=where: (
                metric(service, "escalator_store_unavailable_total", where=where) >= 2
            ),
            within=5,
            what=f"the {where} meets the outage twice",
        )
    assert not any(loop.done() for loop in loops)

    await proxy.restore()
    response = await service.post({**BODY, "conversation_id": "after"})
    assert response.status == 201
    after_id = (await response.json())["id"]
    service.dispatcher.wake()
    await _until(
        lambda: metric(service, "escalator_tasks_created_total", how="created") >= 2,
        within=5,
        what="the dispatcher creates the task of an escalation made after the outage",
    )
    await _until(
        lambda: any(
            metric(service, "escalator_reconciled_escalations_total", result=result)
            for result in ("changed", "unchanged")
        ),
        within=5,
        what="the reconciler re-reads the stale escalation",
    )
    service.dispatcher.stop()
    reconciler.stop()
    await asyncio.gather(*loops)
    assert (await service.get(after_id))["task_sid"]


def _postgresql_version() -> str | None:
    """The one local PostgreSQL cluster's version, as Debian's pg_ctlcluster names it."""
    clusters = Path("/etc/postgresql")
    versions = sorted(path.name for path in clusters.iterdir()) if clusters.is_dir() else []
    return versions[-1] if len(versions) == 1 else None


@pytest.mark.skipif(
    # CI's server is its own and the suite runs one test at a time; a developer's may be shared.
    os.environ.get("ESCALATOR_TEST_PG_RESTART") != "1" and os.environ.get("CI") != "true",
    reason="restarts the PostgreSQL server, which other tests share: "
    "set ESCALATOR_TEST_PG_RESTART=1 to run it on a server of your own (CI=true runs it)",
)
async def test_a_real_postgresql_restart_gives_503_then_recovers(
    service_factory: ServiceFactory, postgres_url: str
) -> None:
    version = _postgresql_version()
    if shutil.which("pg_ctlcluster") is None or version is None:
        pytest.skip("needs pg_ctlcluster and exactly one cluster under /etc/postgresql")
    service = await service_factory(database_url=postgres_url)
    escalation_id, task_sid = await _escalate_with_task(service, "before")

    restart = await asyncio.create_subprocess_exec(
        "pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"
    )
    seen: list[int] = []
    while restart.returncode is None:
        seen.extend(await _every_endpoint(service, escalation_id, task_sid))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.01):
                await restart.wait()
    assert await restart.wait() == 0
    assert 503 in seen  # _every_endpoint already refused any 500

    deadline = time.monotonic() + 10
    while (await _status(service, "GET", "/readyz"))[0] != 200:
        assert time.monotonic() < deadline, "not ready 10 s after the restart"
        await asyncio.sleep(0.1)
    new = {**BODY, "conversation_id": "after"}
    status, _ = await _status(service, "POST", "/escalations", json=new, headers=AUTH)
    assert status == 201
