"""``escalator serve`` stopping: SIGTERM drains within the grace period, a second one exits."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Simulator, seeded_simulator
from tests.e2e.processes import ESCALATOR, clean_environ, free_port
from tests.e2e.test_cli import API_KEY, escalation_body, wait_until_healthy

AUTH = {"Authorization": f"Bearer {API_KEY}"}
_LEASED = "SELECT count(*) FROM outbox WHERE lease_owner IS NOT NULL"


@dataclass
class Serve:
    """One ``escalator serve`` process on a SQLite file."""

    process: subprocess.Popen[bytes]
    port: int
    database: Path
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.stderr.read_text(encoding="utf-8")

    def signal(self, signum: signal.Signals = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    async def exited(self, within: float) -> int:
        """The exit status, once the process has ended; fail if it runs ``within`` s more."""
        deadline = time.monotonic() + within
        while (status := self.process.poll()) is None:
            assert time.monotonic() < deadline, f"serve still running after {within} s"
            await asyncio.sleep(0.02)
        return status

    def listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except ConnectionRefusedError:
            return False


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Starts ``escalator serve`` processes (SIGKILLed if a test leaves one running)."""
    started: list[Serve] = []

    def start(simulator: Simulator, database: Path, **env: str) -> Serve:
        port = free_port()
        stderr = tmp_path / f"serve-{len(started)}.stderr"
        environ = clean_environ(
            ESCALATOR_API_KEYS=API_KEY,
            ESCALATOR_DATABASE_URL=f"sqlite:///{database}",
            ESCALATOR_PORT=str(port),
            ESCALATOR_WORKSPACE_SID=simulator.workspace_sid,
            ESCALATOR_WORKFLOW_SID=simulator.workflow_sid,
            ESCALATOR_TASKROUTER_URL=simulator.url,
            ESCALATOR_LOG_FORMAT="json",
            TWILIO_ACCOUNT_SID=simulator.account_sid,
            TWILIO_AUTH_TOKEN=simulator.auth_token,
            **env,
        )
        with stderr.open("wb") as log:
            process = subprocess.Popen(
                [*ESCALATOR, "serve"],
                cwd=tmp_path,
                env=environ,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        service = Serve(process=process, port=port, database=database, stderr=stderr)
        started.append(service)
        wait_until_healthy(service.url, process)
        return service

    yield start
    for service in started:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait()


async def _escalate(http: aiohttp.ClientSession, url: str) -> str:
    async with http.post(f"{url}/escalations", json=escalation_body(), headers=AUTH) as response:
        assert response.status == 201, await response.text()
        return str((await response.json())["id"])


def _rows(database: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as connection:
        return connection.execute(query).fetchall()


async def _until(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        await asyncio.sleep(0.02)


async def _draining(http: aiohttp.ClientSession, url: str, within: float) -> dict[str, Any]:
    """Poll /readyz until it answers 503; the problem it answers with."""
    deadline = time.monotonic() + within
    while True:
        async with http.get(f"{url}/readyz") as response:
            if response.status == 503:
                assert response.content_type == "application/problem+json"
                assert response.headers["Retry-After"].isdigit()
                body: dict[str, Any] = await response.json()
                return body
            assert response.status == 200
        assert time.monotonic() < deadline, f"/readyz still 200 after {within} s"
        await asyncio.sleep(0.02)


async def test_sigterm_fails_readiness_drains_in_flight_requests_and_releases_leases(
    tmp_path: Path, serve: Any
) -> None:
    # Task creation takes longer than the grace period: SIGTERM finds the dispatcher in the
    # middle of a TaskRouter call (and the simulator can stop once that call is answered).
    with seeded_simulator(tmp_path, "--latency", "tasks.create=4") as simulator:
        database = tmp_path / "escalator.db"
        grace, delay = 2.5, 1.0
        service = serve(
            simulator,
            database,
            ESCALATOR_SHUTDOWN_GRACE_SECONDS=str(grace),
            ESCALATOR_SHUTDOWN_DELAY_SECONDS=str(delay),
        )
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            leased = await _escalate(http, service.url)
            await _until(
                lambda: _rows(database, _LEASED) == [(1,)],
                within=3,
                what="the dispatcher leases the outbox row",
            )
            stream = await http.get(f"{service.url}/escalations/{leased}/stream", headers=AUTH)
            assert stream.status == 200
            assert (await stream.content.readline()).startswith(b"id: ")
            # The database is locked by another writer: this POST is in flight until it lets go.
            blocker = sqlite3.connect(database, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            # It reaches the server before the listener closes: that waits for the delay.
            in_flight = asyncio.create_task(_escalate(http, service.url))

            service.signal(signal.SIGTERM)
            signalled = time.monotonic()
            problem = await _draining(http, service.url, within=delay)
            assert "draining" in problem["detail"]
            async with http.get(f"{service.url}/healthz") as response:
                assert response.status == 200
            await _until(lambda: not service.listening(), within=2, what="the listener closes")
            # The open stream is ended cleanly (not cut), without waiting for the grace period.
            async with asyncio.timeout(2):
                await stream.content.read()
            stream.release()
            assert service.process.poll() is None, "exited with a request in flight"
            blocker.execute("COMMIT")
            blocker.close()
            acknowledged = await in_flight

        assert await service.exited(within=grace) == 0
        assert time.monotonic() - signalled < grace + 0.5

    stored = {row[0] for row in _rows(database, "SELECT id FROM escalations")}
    assert {leased, acknowledged} <= stored
    # The row whose TaskRouter call was cut short is given back, marked ambiguous: whoever
    # takes it next looks for the task before creating one.
    outbox = _rows(database, "SELECT escalation_id, lease_owner, ambiguous FROM outbox")
    assert (leased, None, 1) in outbox
    assert all(owner is None for _, owner, _ in outbox)
    logs = service.logs()
    for event in ("service.stopping", "dispatcher.leases_released", "service.stopped"):
        assert event in logs


async def test_a_drain_stuck_past_the_grace_period_exits_1_within_it(
    simulator: Simulator, tmp_path: Path, serve: Any
) -> None:
    database = tmp_path / "escalator.db"
    grace = 1.5
    service = serve(
        simulator,
        database,
        ESCALATOR_SHUTDOWN_GRACE_SECONDS=str(grace),
        ESCALATOR_SHUTDOWN_DELAY_SECONDS="0.5",
    )
    # Another writer holds the database longer than the grace period: the POST cannot commit.
    blocker = sqlite3.connect(database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        async with aiohttp.ClientSession() as http:
            # It reaches the server during the delay, and waits for the database.
            body = escalation_body()
            post = asyncio.create_task(
                http.post(f"{service.url}/escalations", json=body, headers=AUTH)
            )
            service.signal(signal.SIGTERM)
            signalled = time.monotonic()

            assert await service.exited(within=grace + 0.5) == 1
            assert time.monotonic() - signalled < grace + 0.3
            with pytest.raises(aiohttp.ClientError):
                await post  # never acknowledged
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert _rows(database, "SELECT id FROM escalations") == []
    assert "service.stop_overran" in service.logs()


async def test_a_second_sigterm_exits_at_once_with_status_143(
    simulator: Simulator, tmp_path: Path, serve: Any
) -> None:
    service = serve(
        simulator,
        tmp_path / "escalator.db",
        ESCALATOR_SHUTDOWN_GRACE_SECONDS="60",
        ESCALATOR_SHUTDOWN_DELAY_SECONDS="50",
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        service.signal(signal.SIGTERM)
        await _draining(http, service.url, within=2)

    service.signal(signal.SIGTERM)

    assert await service.exited(within=2) == 128 + signal.SIGTERM
    assert "service.exit_now" in service.logs()


async def test_every_acknowledged_escalation_is_there_after_a_hard_exit_and_restart(
    simulator: Simulator, tmp_path: Path, serve: Any
) -> None:
    database = tmp_path / "escalator.db"
    service = serve(
        simulator,
        database,
        ESCALATOR_SHUTDOWN_GRACE_SECONDS="60",
        ESCALATOR_SHUTDOWN_DELAY_SECONDS="50",
    )
    acknowledged: list[str] = []

    async def keep_escalating(http: aiohttp.ClientSession) -> None:
        # Until the process is gone: each 201 is a promise that the escalation is stored.
        with contextlib.suppress(aiohttp.ClientError):
            while True:
                acknowledged.append(await _escalate(http, service.url))

    async with aiohttp.ClientSession() as http:
        writers = [asyncio.create_task(keep_escalating(http)) for _ in range(4)]
        await _until(lambda: len(acknowledged) >= 10, within=5, what="10 escalations")
        service.signal(signal.SIGTERM)
        await _draining(http, service.url, within=2)
        # Still served while draining (the listener is open during the delay).
        count = len(acknowledged)
        await _until(lambda: len(acknowledged) >= count + 10, within=5, what="10 more")
        service.signal(signal.SIGTERM)
        assert await service.exited(within=2) == 128 + signal.SIGTERM
        await asyncio.gather(*writers)

    restarted = serve(simulator, database)
    async with aiohttp.ClientSession(headers=AUTH) as http:
        for escalation_id in acknowledged:
            async with http.get(f"{restarted.url}/escalations/{escalation_id}") as response:
                assert response.status == 200, escalation_id
