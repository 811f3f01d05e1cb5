"""The ``escalator`` command as a user runs it: real processes, real sockets, a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from escalator.routing import bundled_routing_path
from tests.e2e.conftest import Simulator
from tests.e2e.processes import (
    ESCALATOR,
    clean_environ,
    free_port,
    one_stderr_line,
    run_escalator,
    stop,
)

API_KEY = "e2e-api-key-" + "k" * 20
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

SUMMARY = "Caller disputes the Quixotic Marmalade subscription charge on the March invoice."
PHONE = "+15558675310"
EMAIL = "ada.lovelace@example.com"


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    stderr: Path

    def logs(self) -> str:
        return self.stderr.read_text(encoding="utf-8")


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], within: float = 20) -> None:
    deadline = time.monotonic() + within
    while True:
        assert process.poll() is None, f"serve exited with {process.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, f"serve did not answer /healthz within {within} s"
        time.sleep(0.05)


@pytest.fixture
def service(tmp_path: Path, simulator: Simulator) -> Iterator[Service]:
    """``escalator migrate`` then ``escalator serve`` against the simulator, on a free port."""
    port = free_port()
    env = clean_environ(
        ESCALATOR_API_KEYS=API_KEY,
        ESCALATOR_DATABASE_URL=f"sqlite:///{tmp_path / 'escalator.db'}",
        ESCALATOR_PORT=str(port),
        ESCALATOR_WORKSPACE_SID=simulator.workspace_sid,
        ESCALATOR_WORKFLOW_SID=simulator.workflow_sid,
        ESCALATOR_TASKROUTER_URL=simulator.url,
        TWILIO_ACCOUNT_SID=simulator.account_sid,
        TWILIO_AUTH_TOKEN=simulator.auth_token,
    )
    migrated = run_escalator("migrate", cwd=tmp_path, env=env)
    assert migrated.returncode == 0, migrated.stderr
    stderr = tmp_path / "serve.stderr"
    with stderr.open("wb") as log:
        process = subprocess.Popen(
            [*ESCALATOR, "serve"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
        yield Service(url=url, process=process, stderr=stderr)
    finally:
        if process.poll() is None:
            stop(process)


def escalation_body() -> dict[str, Any]:
    return {
        "conversation_id": f"conv-{uuid.uuid4().hex}",
        "reason_code": "billing_dispute",
        "summary": SUMMARY,
        "channel": "chat",
        "customer": {"id": "cust-1", "name": "Ada", "phone": PHONE, "email": EMAIL},
        "context": {
            "order-id": "A-1001",
            "loyalty tier": "gold",
            "plan.name": "pro",
            "lines": [{"sku-code": "X1", "unit-price": 42}],
        },
    }


async def escalate_and_wait_until_queued(service: Service) -> dict[str, Any]:
    """POST an escalation, then poll it until it is queued with a task (2 s at most)."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = escalation_body()
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{service.url}/escalations", json=body) as response:
            assert response.status == 201, await response.text()
            created = await response.json()
            assert response.headers["Location"] == f"/escalations/{created['id']}"
        deadline = time.monotonic() + 2
        while True:
            async with http.get(f"{service.url}/escalations/{created['id']}") as response:
                assert response.status == 200
                escalation: dict[str, Any] = await response.json()
            if escalation["status"] == "queued" and escalation["task_sid"]:
                return escalation
            assert time.monotonic() < deadline, f"not queued within 2 s: {escalation}"
            await asyncio.sleep(0.05)


async def fetch_task(simulator: Simulator, task_sid: str) -> Any:
    """The task as the real twilio SDK reads it from TaskRouter (here the simulator)."""
    http_client = AsyncTwilioHttpClient()
    try:
        client = Client(
            simulator.account_sid, simulator.auth_token, http_client=http_client, environment={}
        )
        client.taskrouter.base_url = simulator.url
        workspace = client.taskrouter.v1.workspaces(simulator.workspace_sid)
        return await workspace.tasks(task_sid).fetch_async()
    finally:
        await http_client.close()


def all_keys(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from all_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from all_keys(item)


# --- usage and configuration errors ---------------------------------------------------------


def test_serve_without_api_key_exits_1_with_one_line(tmp_path: Path) -> None:
    result = run_escalator("serve", cwd=tmp_path)

    assert result.returncode == 1
    assert "ESCALATOR_API_KEYS" in one_stderr_line(result)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ESCALATOR_PORT", "abc"),
        ("ESCALATOR_PORT", "70000"),
        ("ESCALATOR_DATABASE_URL", "mysql://escalator@db/escalator"),
        ("ESCALATOR_API_KEYS", "short"),
        ("ESCALATOR_WORKSPACE_SID", "WS1234"),
    ],
)
def test_serve_with_a_bad_setting_exits_1_naming_it(
    tmp_path: Path, variable: str, value: str
) -> None:
    env = clean_environ(**{"ESCALATOR_API_KEYS": API_KEY, variable: value})

    result = run_escalator("serve", cwd=tmp_path, env=env)

    assert result.returncode == 1
    line = one_stderr_line(result)
    assert variable in line
    assert API_KEY not in line


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="no-command"),
        pytest.param(["frobnicate"], id="unknown-command"),
        pytest.param(["serve", "--bogus"], id="unknown-option"),
        pytest.param(["simulate", "--port", "eighty"], id="bad-option-value"),
        pytest.param(["check", "a.yaml", "b.yaml"], id="extra-argument"),
    ],
)
def test_bad_usage_exits_2_with_one_line(tmp_path: Path, args: list[str]) -> None:
    result = run_escalator(*args, cwd=tmp_path)

    assert result.returncode == 2
    assert one_stderr_line(result).startswith("escalator")


def test_simulate_on_a_busy_port_exits_1_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        result = run_escalator("simulate", "--port", str(port), cwd=tmp_path)

    assert result.returncode == 1
    assert str(port) in one_stderr_line(result)


# --- check ----------------------------------------------------------------------------------


def test_check_of_the_bundled_file_exits_0(tmp_path: Path) -> None:
    result = run_escalator("check", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_check_of_a_copy_of_the_bundled_file_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(bundled_routing_path().read_text(encoding="utf-8"), encoding="utf-8")

    result = run_escalator("check", str(path), cwd=tmp_path)

    assert result.returncode == 0, result.stderr


def test_check_of_a_broken_file_exits_1_naming_file_and_key(tmp_path: Path) -> None:
    raw = yaml.safe_load(bundled_routing_path().read_text(encoding="utf-8"))
    raw["reasons"]["billing_dispute"]["priority"] = -1
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")

    result = run_escalator("check", str(path), cwd=tmp_path)

    assert result.returncode == 1
    line = one_stderr_line(result)
    assert str(path) in line
    assert "reasons.billing_dispute.priority" in line


def test_check_of_a_missing_file_exits_1_with_one_line(tmp_path: Path) -> None:
    result = run_escalator("check", "absent.yaml", cwd=tmp_path)

    assert result.returncode == 1
    assert "absent.yaml" in one_stderr_line(result)


# --- migrate --------------------------------------------------------------------------------


def test_migrate_creates_the_tables_and_is_idempotent(tmp_path: Path) -> None:
    database = tmp_path / "escalator.db"
    env = clean_environ(ESCALATOR_DATABASE_URL=f"sqlite:///{database}")

    first = run_escalator("migrate", cwd=tmp_path, env=env)
    second = run_escalator("migrate", cwd=tmp_path, env=env)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"escalations", "escalation_history", "outbox", "alembic_version"} <= tables
    assert revision in first.stdout


def test_migrate_uses_the_default_database_in_the_working_directory(tmp_path: Path) -> None:
    result = run_escalator("migrate", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "escalator.db").is_file()


# --- serve ----------------------------------------------------------------------------------


async def test_serve_answers_healthz_and_readyz(service: Service) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(f"{service.url}{path}") as response:
                assert response.status == 200, (path, await response.text())


async def test_escalations_need_the_api_key(service: Service) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{service.url}/escalations", json=escalation_body()) as response:
            assert response.status == 401
        headers = {"Authorization": "Bearer not-the-key-0123456789"}
        async with http.post(
            f"{service.url}/escalations", json=escalation_body(), headers=headers
        ) as response:
            assert response.status == 401


async def test_escalation_becomes_a_task_the_twilio_sdk_reads_back(
    service: Service, simulator: Simulator
) -> None:
    escalation = await escalate_and_wait_until_queued(service)

    task = await fetch_task(simulator, escalation["task_sid"])

    assert task.sid == escalation["task_sid"]
    assert task.workflow_sid == simulator.workflow_sid
    # billing_dispute's route in the bundled routing file.
    assert (task.priority, task.timeout, task.task_channel_unique_name) == (50, 3600, "chat")
    assert len(task.attributes) <= 4096
    attributes = json.loads(task.attributes)
    assert attributes["escalation_id"] == escalation["id"]
    assert attributes["ai_summary"] == SUMMARY
    assert attributes["reason_code"] == "billing_dispute"
    keys = list(all_keys(attributes))
    assert not [key for key in keys if "-" in key]
    assert all(IDENTIFIER.match(key) for key in keys), keys
    # Sanitised, not dropped: the hyphenated key arrives under its TaskRouter-safe name.
    assert attributes["context"]["order_id"] == "A-1001"


async def test_service_logs_carry_no_summary_phone_email_or_key(service: Service) -> None:
    await escalate_and_wait_until_queued(service)
    assert stop(service.process) == 0

    logs = service.logs()

    assert "task.created" in logs  # the log was written, so its absence below means something
    for secret in (SUMMARY, "Quixotic Marmalade", PHONE, PHONE.lstrip("+"), EMAIL, API_KEY):
        assert secret not in logs


async def test_sigterm_stops_serve_with_status_0_within_10_s(service: Service) -> None:
    await escalate_and_wait_until_queued(service)

    assert stop(service.process, timeout=10) == 0
