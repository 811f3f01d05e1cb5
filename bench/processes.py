"""The processes under test, started as children: `escalator simulate`, `escalator serve`, the
apps in this directory; the simulator's and the service's HTTP endpoints the scenarios read;
the PostgreSQL databases they run on."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import ACCOUNT_SID, API_KEY, AUTH_TOKEN, BENCH_DIR, PUBLIC_URL, ROUTING_FILE

__all__ = [
    "Simulator",
    "Stack",
    "clean_environ",
    "free_port",
    "metric_samples",
    "metrics",
    "outbox_backlog",
    "postgres_context",
    "postgres_database",
    "running_stack",
    "sim_control",
    "sim_get",
    "sim_list",
    "start_script",
    "start_service",
    "start_simulator",
    "stop",
    "twilio_client",
    "until_drained",
    "until_ready",
]

# ---------------------------------------------------------------- child processes


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without escalator's and Twilio's variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESCALATOR_", "TWILIO_"))}
    return {**env, **extra}


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop(process: subprocess.Popen[str], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Simulator:
    """The `escalator simulate` child and the workspace it seeded."""

    process: subprocess.Popen[str]
    url: str
    workspace_sid: str
    workflow_sid: str


def start_simulator(workdir: Path, *flags: str, name: str = "simulator") -> Simulator:
    """`escalator simulate --seed`: the bundled routing file's workspace, no event callback URL
    (the only callbacks the service gets are the benchmark's) and no acting workers; `flags`
    add faults and limits (see `escalator simulate --help`)."""
    command = [
        *(sys.executable, "-m", "escalator", "simulate", "--port", "0"),
        *("--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN),
        *("--seed", str(ROUTING_FILE)),
        *flags,
    ]
    log = workdir / f"{name}.log"
    process = subprocess.Popen(  # noqa: S603 - our own command line
        command,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        env=clean_environ(),
        text=True,
    )
    assert process.stdout is not None
    found: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while "ESCALATOR_WORKFLOW_SID" not in found and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if match := re.match(r"TaskRouter simulator at (\S+)", line):
            found["url"] = match.group(1)
        key, sep, value = line.strip().partition("=")
        if sep and key.startswith("ESCALATOR_"):
            found[key] = value
    if "ESCALATOR_WORKFLOW_SID" not in found or "url" not in found:
        stop(process)
        raise RuntimeError(f"the simulator did not start; see {log.name} (--keep)")
    return Simulator(
        process, found["url"], found["ESCALATOR_WORKSPACE_SID"], found["ESCALATOR_WORKFLOW_SID"]
    )


def start_service(
    workdir: Path,
    simulator: Simulator,
    port: int,
    *,
    database_url: str | None = None,
    log_level: str = "info",
    profile: str | None = None,
    name: str = "escalator",
    command: Sequence[str] = ("-m", "escalator", "serve"),
    **settings: str,
) -> subprocess.Popen[str]:
    """`escalator serve` on `database_url` (default: a SQLite file in `workdir`, with its
    default durability: WAL, synchronous=FULL), the simulator as TaskRouter; `settings` are
    more ESCALATOR_* variables (`reconcile_after="60"`); `command`: the interpreter's
    arguments that serve (a wrapper script, say)."""
    env = clean_environ(
        ESCALATOR_DATABASE_URL=database_url or f"sqlite:///{workdir / f'{name}.db'}",
        ESCALATOR_HOST="127.0.0.1",
        ESCALATOR_PORT=str(port),
        ESCALATOR_PUBLIC_URL=PUBLIC_URL,
        ESCALATOR_API_KEYS=API_KEY,
        ESCALATOR_LOG_LEVEL=log_level,
        ESCALATOR_LOG_FORMAT="json",
        ESCALATOR_WORKSPACE_SID=simulator.workspace_sid,
        ESCALATOR_WORKFLOW_SID=simulator.workflow_sid,
        ESCALATOR_TASKROUTER_URL=simulator.url,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        # Keep the reconciler's re-reads of quiet escalations out of the measurement.
        ESCALATOR_RECONCILE_AFTER="3600",
        **{f"ESCALATOR_{key.upper()}": value for key, value in settings.items()},
    )
    profiling = ["-m", "cProfile", "-o", str(Path(profile).resolve())] if profile else []
    return subprocess.Popen(  # noqa: S603 - our own command line
        [sys.executable, *profiling, *command],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / f"{name}.log").open("w"),
        env=env,
        text=True,
    )


async def until_ready(
    session: aiohttp.ClientSession,
    base: str,
    process: subprocess.Popen[str],
    path: str = "/readyz",
    within: float = 30,
) -> None:
    """Wait until `base + path` answers 200; raise if the process dies or `within` passes."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and process.poll() is None:
        try:
            async with session.get(f"{base}{path}") as answer:
                if answer.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{base}{path} did not become ready (see the logs; --keep keeps them)")


@dataclass
class Stack:
    """A running `escalator serve` and the simulator it creates tasks in."""

    simulator: Simulator
    service: subprocess.Popen[str]
    base: str

    @property
    def pids(self) -> list[int]:
        """The service's and the simulator's process ids."""
        return [self.service.pid, self.simulator.process.pid]

    def stop(self) -> None:
        """Stop the service, then the simulator."""
        stop(self.service)
        stop(self.simulator.process)


@contextlib.asynccontextmanager
async def running_stack(
    session: aiohttp.ClientSession,
    workdir: Path,
    *,
    name: str,
    database_url: str | None = None,
    simulator_flags: Iterable[str] = (),
    **settings: str,
) -> AsyncIterator[Stack]:
    """Start a simulator and a service on it, ready; stop both on the way out."""
    simulator = start_simulator(workdir, *simulator_flags, name=f"{name}-simulator")
    try:
        port = free_port()
        service = start_service(
            workdir, simulator, port, database_url=database_url, name=name, **settings
        )
        stack = Stack(simulator, service, f"http://127.0.0.1:{port}")
        try:
            await until_ready(session, stack.base, service)
            yield stack
        finally:
            stop(service)
    finally:
        stop(simulator.process)


def start_script(workdir: Path, script: str, *args: str, name: str) -> tuple[Any, str]:
    """Run `bench/<script> --port PORT *args` as its own process; it and its base URL."""
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - our own command line
        [sys.executable, str(BENCH_DIR / script), "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / f"{name}.log").open("w"),
        env=clean_environ(),
        text=True,
    )
    return process, f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------- the simulator over HTTP


def _sim_auth() -> dict[str, str]:
    token = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def sim_get(session: aiohttp.ClientSession, url: str) -> Any:
    """GET a simulator URL with the account's credentials; its JSON."""
    async with session.get(url, headers=_sim_auth()) as answer:
        if answer.status != 200:
            raise RuntimeError(f"simulator GET {url}: HTTP {answer.status}")
        return await answer.json()


async def sim_list(session: aiohttp.ClientSession, url: str, key: str) -> list[dict[str, Any]]:
    """Every item of a paged simulator list."""
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        page = await sim_get(session, next_url)
        items += page[key]
        next_url = page["meta"].get("next_page_url")
    return items


async def sim_control(
    session: aiohttp.ClientSession, simulator: Simulator, path: str, body: Any = None
) -> Any:
    """POST (or DELETE when `body` is None) a control endpoint under /_sim/."""
    url = f"{simulator.url}/_sim/{path}"
    method = session.delete(url) if body is None else session.post(url, json=body)
    async with method as answer:
        if answer.status >= 300:
            raise RuntimeError(f"simulator {path}: HTTP {answer.status} {await answer.text()}")
        return await answer.json() if answer.status != 204 else None


def twilio_client(simulator: Simulator) -> Any:
    """A sync twilio SDK client whose TaskRouter is the simulator."""
    from twilio.rest import Client

    client = Client(ACCOUNT_SID, AUTH_TOKEN, environment={})
    client.taskrouter.base_url = simulator.url
    return client


# ---------------------------------------------------------------- the service over HTTP


async def metrics(session: aiohttp.ClientSession, base: str) -> str:
    """The service's /metrics text."""
    async with session.get(f"{base}/metrics") as answer:
        return await answer.text()


def metric_samples(text: str, name: str) -> dict[str, float]:
    """The samples of one metric, keyed by their label text (`""` when unlabelled)."""
    found: dict[str, float] = {}
    pattern = rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$"
    for labels, value in re.findall(pattern, text, re.MULTILINE):
        found[labels] = found.get(labels, 0.0) + float(value)
    return found


def outbox_backlog(text: str) -> float:
    """`escalator_outbox_backlog` from a /metrics text."""
    return sum(metric_samples(text, "escalator_outbox_backlog").values())


async def until_drained(
    session: aiohttp.ClientSession, base: str, within: float, poll: float = 0.2
) -> float:
    """Wait until the service owes TaskRouter nothing; seconds waited (raise after `within`)."""
    started = time.monotonic()
    while outbox_backlog(await metrics(session, base)) > 0:
        if time.monotonic() - started > within:
            raise RuntimeError(f"the outbox was not drained after {within} s")
        await asyncio.sleep(poll)
    return time.monotonic() - started


# ---------------------------------------------------------------- PostgreSQL


@contextlib.asynccontextmanager
async def postgres_database(admin_url: str) -> AsyncIterator[str]:
    """A fresh database `bench_<random>` on the server of `admin_url`, dropped afterwards."""
    import asyncpg

    name = f"bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def postgres_context(url: str) -> dict[str, Any]:
    """The server's version and the settings that decide what a commit costs."""
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        found: dict[str, Any] = {"version": await connection.fetchval("SHOW server_version")}
        for setting in (
            "synchronous_commit",
            "fsync",
            "wal_sync_method",
            "full_page_writes",
            "commit_delay",
            "shared_buffers",
            "max_connections",
        ):
            found[setting] = await connection.fetchval(f"SHOW {setting}")
        # Others' connections count against max_connections (a shared server).
        found["connections_in_use"] = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )
        return found
    finally:
        await connection.close()
