"""Scenario 6, memory: the `escalator serve` process's resident memory, idle and loaded.

`escalator serve` on SQLite (PostgreSQL too with BENCH_MEMORY_POSTGRES=1), its simulator with no
acting workers and no event callbacks, so every escalation stays open (`queued`) once its task
exists. Read from /proc/<pid>/status: VmRSS (resident now) and VmHWM (the peak), in MiB:
- idle: ready, nothing sent yet (after a 2 s settle);
- after 100 escalations (code paths imported, pools and caches warm);
- with N open escalations (10,000), every task created (outbox drained), 2 s settle.
The peak during scenario 1 is in that scenario's results (`memory_mib`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from benchlib import (
    API_KEY,
    Context,
    CpuMeter,
    rss_mib,
)
from load import (
    closed_loop,
    encoded_bodies,
    post_escalation,
)
from processes import (
    Stack,
    clean_environ,
    postgres_database,
    running_stack,
    until_drained,
)


async def _open(ctx: Context, stack: Stack, tag: str, count: int) -> tuple[int, dict[str, Any]]:
    url = f"{stack.base}/escalations"
    bodies = encoded_bodies(tag, count)

    async def send(n: int) -> tuple[str, str | None]:
        return await post_escalation(ctx.http, url, bodies[n])

    meter = CpuMeter({"service": [stack.service.pid], "driver": [os.getpid()]})
    load = await closed_loop(send, concurrency=32, seconds=600, count=count)
    await until_drained(ctx.http, stack.base, within=600)
    return len(load.ok(("201",))), meter.read()


async def _open_count(ctx: Context, stack: Stack) -> int:
    """Escalations listed as `queued` (open, a task exists), page by page."""
    total, cursor = 0, None
    headers = {"Authorization": f"Bearer {API_KEY}"}
    while True:
        params = {"status": "queued", "limit": "100"}
        if cursor:
            params["cursor"] = cursor
        async with ctx.http.get(
            f"{stack.base}/escalations", params=params, headers=headers
        ) as answer:
            if answer.status != 200:
                return -1
            page = await answer.json()
        total += len(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return total


def _database_files(pid: int) -> int:
    """How many descriptors the service holds on its SQLite file: one per open connection,
    each with its own page cache (up to 2 MiB by default)."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return -1
    return sum(1 for link in links if link.endswith(".db"))


async def _measure(ctx: Context, label: str, database_url: str | None) -> dict[str, Any]:
    count = ctx.pick(10_000, 1_000)
    async with running_stack(
        ctx.http, ctx.workdir, name=f"memory-{label}", database_url=database_url
    ) as stack:
        pid = stack.service.pid
        await asyncio.sleep(2)
        idle = rss_mib(pid)
        warm, _ = await _open(ctx, stack, f"mem-{label}-warm", 100)
        await asyncio.sleep(2)
        after_warm = rss_mib(pid)
        opened, cpu = await _open(ctx, stack, f"mem-{label}", count)
        await asyncio.sleep(2)
        loaded = rss_mib(pid)
        connections = _database_files(pid)
        queued = await _open_count(ctx, stack)
    ctx.log(
        f"  memory {label}: idle {idle.get('VmRSS')} MiB, after {warm} escalations"
        f" {after_warm.get('VmRSS')} MiB, with {warm + opened} open"
        f" {loaded.get('VmRSS')} MiB (peak {loaded.get('VmHWM')} MiB); listed queued: {queued}"
    )
    return {
        "idle_mib": idle,
        "after_100_mib": after_warm,
        "open_escalations": warm + opened,
        "listed_queued": queued,
        "loaded_mib": loaded,
        "cpu_while_opening": cpu,
        "open_database_files": connections,
    }


# Imported in this order by a fresh interpreter; `escalator.cli` is what `escalator serve` runs.
_IMPORTS = (
    "aiohttp",
    "pydantic",
    "sqlalchemy.ext.asyncio",
    "aiosqlite",
    "asyncpg",
    "alembic.command",
    "structlog",
    "prometheus_client",
    "twilio.rest",
    "escalator.api",
    "escalator.simulator",
    "escalator.cli",
)
_IMPORT_SCRIPT = """
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
steps = [{"module": "(interpreter)", "rss_mib": rss()}]
for name in sys.argv[1:]:
    importlib.import_module(name)
    steps.append({"module": name, "rss_mib": rss()})
print(json.dumps(steps))
"""


async def _imports() -> list[dict[str, Any]]:
    """RSS of a fresh interpreter after each import in turn: what the code costs at rest."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _IMPORT_SCRIPT,
        *_IMPORTS,
        stdout=asyncio.subprocess.PIPE,
        env=clean_environ(),
    )
    out, _ = await process.communicate()
    steps = json.loads(out)
    previous = 0.0
    for step in steps:
        step["delta_mib"] = round(step["rss_mib"] - previous, 1)
        step["rss_mib"] = round(step["rss_mib"], 1)
        previous = step["rss_mib"]
    return steps


async def run(ctx: Context) -> dict[str, Any]:
    """On SQLite (the embedded default; PostgreSQL too with BENCH_MEMORY_POSTGRES=1, a minute
    more); and what the imports cost."""
    results: dict[str, Any] = {"imports": await _imports()}
    results["sqlite"] = await _measure(ctx, "sqlite", None)
    if ctx.postgres_admin and os.environ.get("BENCH_MEMORY_POSTGRES") == "1":
        async with postgres_database(ctx.postgres_admin) as url:
            results["postgresql"] = await _measure(ctx, "postgresql", url)
    return results
