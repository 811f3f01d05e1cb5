"""The run's child processes: one ``escalator simulate``, N ``escalator serve``, a database."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

__all__ = [
    "ACCOUNT_SID",
    "API_KEY",
    "AUTH_TOKEN",
    "ROUTING_FILE",
    "Database",
    "Replica",
    "Simulator",
    "create_postgres_database",
    "drop_postgres_database",
    "free_port",
    "restart_postgres",
    "run_migrate",
    "start_simulator",
]

ESCALATOR = [sys.executable, "-m", "escalator"]
ACCOUNT_SID = "AC" + "c4a05" * 6 + "ab"
AUTH_TOKEN = "chaos-simulator-auth-token"
API_KEY = "chaos-api-key-0123456789abcdef"
ROUTING_FILE = Path(__file__).resolve().parent / "routing.yaml"
REPO_ROOT = Path(__file__).resolve().parents[2]


# Every child started here, SIGKILLed at exit if still running: a run interrupted before its
# teardown (Ctrl-C, a test timeout) must not leave servers behind.
_CHILDREN: list[subprocess.Popen[bytes]] = []


@atexit.register
def _kill_children() -> None:
    for child in _CHILDREN:
        if child.poll() is None:
            child.kill()


def _spawn(command: list[str], **options: Any) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, **options)  # our own command line
    _CHILDREN[:] = [c for c in _CHILDREN if c.poll() is None]
    _CHILDREN.append(process)
    return process


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _clean_environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESCALATOR_", "TWILIO_"))}
    return {**env, **extra}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Simulator:
    """The ``escalator simulate`` child and the workspace it seeded from the routing file."""

    process: subprocess.Popen[bytes]
    url: str
    workspace_sid: str
    workflow_sid: str
    log: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def start_simulator(workdir: Path, *, seed: int, worker_policy: str) -> Simulator:
    """Start the simulator on a free port, seeded with the chaos routing file."""
    out, log = workdir / "simulator.out", workdir / "simulator.log"
    command = [
        *ESCALATOR,
        "simulate",
        *("--port", "0", "--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN),
        *("--seed", str(ROUTING_FILE), "--random-seed", str(seed)),
        *("--worker-policy", worker_policy),
    ]
    with out.open("wb") as stdout, log.open("wb") as stderr:
        process = _spawn(command, stdout=stdout, stderr=stderr, env=_clean_environ(), cwd=workdir)
    deadline = time.monotonic() + 30
    found: dict[str, str] = {}
    while time.monotonic() < deadline and process.poll() is None:
        text = out.read_text(encoding="utf-8", errors="replace")
        if match := re.search(r"TaskRouter simulator at (\S+)", text):
            found["url"] = match.group(1)
        for name in ("ESCALATOR_WORKSPACE_SID", "ESCALATOR_WORKFLOW_SID"):
            if match := re.search(rf"^{name}=(\S+)$", text, re.MULTILINE):
                found[name] = match.group(1)
        if len(found) == 3:
            return Simulator(
                process,
                found["url"],
                found["ESCALATOR_WORKSPACE_SID"],
                found["ESCALATOR_WORKFLOW_SID"],
                log,
            )
        await asyncio.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"the simulator did not start:\n{_tail(log)}")


@dataclass
class Database:
    """Where the replicas keep their state: a SQLite file or a fresh PostgreSQL database."""

    kind: str  # "postgresql" | "sqlite"
    url: str
    admin_url: str | None = None
    name: str | None = None


async def create_postgres_database(admin_url: str) -> Database:
    """CREATE DATABASE chaos_<random> on the server of ``admin_url``."""
    name = f"chaos_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(admin_url, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(admin_url)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    return Database("postgresql", url, admin_url, name)


async def drop_postgres_database(database: Database) -> None:
    """DROP the run's database (after the run; best effort, retried while PG restarts)."""
    if database.admin_url is None or database.name is None:
        return
    for _ in range(20):
        try:
            admin = await asyncpg.connect(database.admin_url, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            await asyncio.sleep(0.5)
            continue
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')
            return
        finally:
            await admin.close()


def postgres_restart_refusal(admin_url: str) -> str | None:
    """Why this machine cannot restart the server of ``admin_url``, or None when it can try."""
    host = urlsplit(admin_url).hostname or "localhost"
    if host not in ("127.0.0.1", "localhost", "::1"):
        return f"the PostgreSQL server ({host}) is not on this machine"
    if shutil.which("pg_ctlcluster") is None:
        return "pg_ctlcluster is not installed (not a Debian-style PostgreSQL)"
    clusters = Path("/etc/postgresql")
    versions = sorted(p.name for p in clusters.iterdir()) if clusters.is_dir() else []
    if len(versions) != 1:
        return f"expected one PostgreSQL version under {clusters}, found {versions or 'none'}"
    return None


async def restart_postgres(admin_url: str) -> tuple[bool, str, float]:
    """``pg_ctlcluster --skip-systemctl-redirect VERSION main restart``: (done, why, seconds)."""
    refusal = postgres_restart_refusal(admin_url)
    if refusal is not None:
        return False, refusal, 0.0
    version = next(p.name for p in Path("/etc/postgresql").iterdir())
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        "pg_ctlcluster",
        "--skip-systemctl-redirect",
        version,
        "main",
        "restart",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    took = time.monotonic() - began
    text = output.decode(errors="replace").strip()
    if process.returncode != 0:
        return False, f"pg_ctlcluster exited {process.returncode}: {text[:300]}", took
    return True, f"pg_ctlcluster {version} main restart", took


def service_environ(
    *,
    database_url: str,
    port: int,
    public_url: str,
    simulator: Simulator,
    replicas: int,
) -> dict[str, str]:
    """The environment of one ``escalator serve``: short leases and reconciler timings so the
    run converges in seconds; lookups shared by the replicas within Twilio's 3/s."""
    return _clean_environ(
        ESCALATOR_DATABASE_URL=database_url,
        ESCALATOR_HOST="127.0.0.1",
        ESCALATOR_PORT=str(port),
        ESCALATOR_PUBLIC_URL=public_url,
        ESCALATOR_API_KEYS=API_KEY,
        ESCALATOR_ROUTING_FILE=str(ROUTING_FILE),
        ESCALATOR_WORKSPACE_SID=simulator.workspace_sid,
        ESCALATOR_WORKFLOW_SID=simulator.workflow_sid,
        ESCALATOR_TASKROUTER_URL=simulator.url,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        ESCALATOR_LOG_FORMAT="json",
        ESCALATOR_LOG_LEVEL="info",
        ESCALATOR_DISPATCH_INTERVAL="0.2",
        ESCALATOR_TWILIO_TIMEOUT="3",
        ESCALATOR_DISPATCH_LEASE_SECONDS="11",
        ESCALATOR_RETRY_MAX_BACKOFF="2",
        ESCALATOR_RECONCILE_AFTER="5",
        ESCALATOR_RECONCILE_INTERVAL="1",
        ESCALATOR_RECONCILE_RESET_WINDOW="60",
        ESCALATOR_LOOKUP_RATE_PER_SECOND=f"{3 / replicas:.3f}",
        ESCALATOR_SHUTDOWN_GRACE_SECONDS="5",
        # As deploy/deployment.yaml: the schema is the migrate Job's (run_migrate), so a
        # replica (re)started while the database is down comes up, unready, instead of exiting.
        ESCALATOR_MIGRATE_ON_START="false",
    )


async def run_migrate(env: dict[str, str], workdir: Path) -> None:
    """``escalator migrate``, as the Kubernetes Job does before the rollout."""
    process = await asyncio.create_subprocess_exec(
        *ESCALATOR,
        "migrate",
        env=env,
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"escalator migrate failed: {output.decode(errors='replace')[-500:]}")


@dataclass
class Replica:
    """One ``escalator serve`` process, restarted on the same port after each kill."""

    index: int
    port: int
    env: dict[str, str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    unexpected_exits: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / f"serve-{self.index}.log"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start (or restart) the process; its log is appended to."""
        with self.log.open("ab") as log:
            log.write(f"--- start {self.starts + 1} ---\n".encode())
            log.flush()
            self.process = _spawn(
                [*ESCALATOR, "serve"],
                env=self.env,
                cwd=self.workdir,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no drain, no lease given back, whatever it was doing."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
            self.kills += 1
        self.process = None

    def exited_by_itself(self) -> int | None:
        """The exit status when the process ended without being killed by us, else None."""
        if self.process is None:
            return None
        status = self.process.poll()
        if status is None:
            return None
        self.unexpected_exits.append(f"exit {status}: {_tail(self.log, 5)}")
        self.process = None
        return status

    def stop(self) -> int | None:
        """SIGTERM (graceful drain), SIGKILL after 15 s; the exit status."""
        if self.process is None or self.process.poll() is not None:
            return None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    async def ready(self, session: aiohttp.ClientSession, within: float = 30) -> bool:
        """Wait until ``/readyz`` answers 200; False if it does not within ``within`` s."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and self.alive:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{self.url}/readyz") as answer:
                    if answer.status == 200:
                        return True
            await asyncio.sleep(0.1)
        return False
