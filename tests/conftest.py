"""Fixtures shared by every test: databases (SQLite files, real PostgreSQL) and the simulator."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from escalator.routing import load_routing
from escalator.simulator import RunningSimulator, start_simulator
from escalator.taskrouter.provision import ProvisionedWorkspace, provision_workspace

POSTGRES_URL = os.environ.get(
    "ESCALATOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ACCOUNT_SID = "AC" + "5" * 32
AUTH_TOKEN = "test-auth-token-0123456789"


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


async def _admin_connection() -> asyncpg.Connection:
    return await asyncpg.connect(POSTGRES_URL, timeout=3)


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    """Whether the test PostgreSQL answers; under CI=true it must."""

    async def probe() -> None:
        connection = await _admin_connection()
        await connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = (
            f"PostgreSQL is not reachable at ESCALATOR_TEST_POSTGRES_URL={POSTGRES_URL} "
            f"({type(exc).__name__}); start it with "
            "'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start' "
            "or point ESCALATOR_TEST_POSTGRES_URL at a server"
        )
        if _under_ci():
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    return True


@pytest.fixture
async def postgres_url(postgres_available: bool) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"escalator_test_{uuid.uuid4().hex[:12]}"
    admin = await _admin_connection()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = POSTGRES_URL.rpartition("/")
    yield f"{base}/{name}"
    admin = await _admin_connection()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file of this test's own."""
    return f"sqlite:///{tmp_path / 'escalator.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on a SQLite file and on a real PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'escalator.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


@dataclass
class Sim:
    """A running simulator, a twilio SDK client pointed at it, and the seeded workspace."""

    running: RunningSimulator
    client: Client
    workspace: ProvisionedWorkspace

    @property
    def url(self) -> str:
        return self.running.url


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Sim]:
    """The simulator on a real socket, seeded with the bundled routing file's workspace;
    on a virtual clock when the test is marked ``virtual_clock``."""
    virtual = request.node.get_closest_marker("virtual_clock") is not None
    running = await start_simulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, virtual_clock=virtual
    )
    http = AsyncTwilioHttpClient()
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http, environment={})
    client.taskrouter.base_url = running.url
    try:
        workspace = await provision_workspace(client, load_routing().file.workspace)
        yield Sim(running=running, client=client, workspace=workspace)
    finally:
        await http.close()
        await running.close()
