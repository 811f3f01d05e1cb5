"""Scenario 1, the ack path: `POST /escalations` throughput and latency, beside the ceiling.

Systems, each its own process (escalator with its simulator), all started once and measured in
turn within each run, so every run compares them under the same machine weather:
- `escalator-sqlite`: `escalator serve` on a SQLite file (WAL, synchronous=FULL: its default);
- `ceiling-sqlite`: bench/ceiling_app.py, one INSERT per request, same file settings;
- `escalator-postgres`: `escalator serve` on a fresh PostgreSQL database (server defaults);
- `ceiling-postgres`: bench/ceiling_app.py on PostgreSQL, a pool of 32 connections;
- `bare`: bench/ceiling_app.py without a database (what aiohttp and the client cost).
Per system and run: a closed loop at a fixed concurrency for a fixed time (throughput), then an
open loop at a fixed rate (latency from each request's scheduled time). Between the two, and
after, escalator's outbox is drained (its dispatcher creates the tasks in the simulator) so
that one phase's leftovers do not load the next; how long that took is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Any

from benchlib import (
    Context,
    CpuMeter,
    median,
    rss_mib,
)
from load import (
    Load,
    closed_loop,
    encoded_bodies,
    open_loop,
    post_escalation,
)
from processes import (
    Stack,
    postgres_context,
    postgres_database,
    running_stack,
    start_script,
    stop,
    until_drained,
    until_ready,
)
from profiles import (
    py_spy_profile,
)

CONCURRENCY = 32
RATE = 200.0
PG_POOL = 32


@dataclass
class System:
    """One thing `POST /escalations` is sent to."""

    name: str
    base: str
    pids: dict[str, list[int]]
    stack: Stack | None = None

    @property
    def url(self) -> str:
        """Where the escalations go."""
        return f"{self.base}/escalations"


async def _measure(
    ctx: Context, system: System, tag: str, *, seconds: float, closed: bool
) -> dict[str, Any]:
    count = round((20_000 if closed else RATE) * seconds)
    bodies = encoded_bodies(f"{system.name}-{tag}", count)

    async def send(n: int) -> tuple[str, str | None]:
        return await post_escalation(ctx.http, system.url, bodies[n])

    meter = CpuMeter({**system.pids, "driver": [os.getpid()]})
    load: Load
    if closed:
        load = await closed_loop(send, concurrency=CONCURRENCY, seconds=seconds, count=count)
    else:
        load = await open_loop(send, rate=RATE, seconds=seconds)
    result = {**load.summary(), "cpu": meter.read()}
    for group in system.pids:
        cpu = result["cpu"][f"{group}_cpu_s"]
        result[f"{group}_cpu_ms_per_request"] = (
            round(1000 * cpu / result["ok"], 3) if result["ok"] else None
        )
    if system.stack is not None:
        # The dispatcher's work for this phase, done before the next phase starts.
        meter = CpuMeter(system.pids)
        result["drain_s"] = round(await until_drained(ctx.http, system.base, within=120), 2)
        drain = meter.read()
        result["drain_cpu"] = drain
        total = result["cpu"]["service_cpu_s"] + drain["service_cpu_s"]
        result["total_cpu_ms_per_escalation"] = (
            round(1000 * total / result["ok"], 3) if result["ok"] else None
        )
    return result


async def _profile(ctx: Context, system: System, seconds: float, *, gil: bool) -> dict[str, Any]:
    """A py-spy profile of the service during one more throughput phase (not measured)."""
    assert ctx.py_spy is not None
    assert system.stack is not None
    bodies = encoded_bodies(f"{system.name}-profile-{gil}", 20_000)

    async def send(n: int) -> tuple[str, str | None]:
        return await post_escalation(ctx.http, system.url, bodies[n])

    out = ctx.workdir / f"{system.name}-{'gil' if gil else 'active'}.py-spy.txt"
    spy = asyncio.create_task(
        py_spy_profile(ctx.py_spy, system.stack.service.pid, seconds, out, gil=gil)
    )
    await asyncio.sleep(0.3)  # py-spy attaches
    load = await closed_loop(send, concurrency=CONCURRENCY, seconds=seconds, count=20_000)
    profile = await spy
    await until_drained(ctx.http, system.base, within=120)
    return {
        **profile,
        "mode": "thread holding the GIL" if gil else "active threads",
        "seconds": seconds,
        "concurrency": CONCURRENCY,
        "per_second": load.summary()["per_second"],
    }


@contextlib.asynccontextmanager
async def _systems(ctx: Context, postgres_url: str | None) -> Any:
    """Start every system; stop them all on the way out."""
    systems: list[System] = []
    async with contextlib.AsyncExitStack() as stack:
        sqlite_stack = await stack.enter_async_context(
            running_stack(ctx.http, ctx.workdir, name="ack-escalator-sqlite")
        )
        systems.append(
            System(
                "escalator-sqlite",
                sqlite_stack.base,
                {
                    "service": [sqlite_stack.service.pid],
                    "simulator": [sqlite_stack.simulator.process.pid],
                },
                stack=sqlite_stack,
            )
        )
        scripts = [("ceiling-sqlite", f"sqlite:///{ctx.workdir / 'ceiling.db'}")]
        if postgres_url:
            pg_stack = await stack.enter_async_context(
                running_stack(
                    ctx.http, ctx.workdir, name="ack-escalator-postgres", database_url=postgres_url
                )
            )
            systems.append(
                System(
                    "escalator-postgres",
                    pg_stack.base,
                    {
                        "service": [pg_stack.service.pid],
                        "simulator": [pg_stack.simulator.process.pid],
                    },
                    stack=pg_stack,
                )
            )
            scripts.append(("ceiling-postgres", postgres_url))
        scripts.append(("bare", "none"))
        for name, db in scripts:
            process, base = start_script(
                ctx.workdir, "ceiling_app.py", "--db", db, "--pool", str(PG_POOL), name=name
            )
            stack.callback(stop, process)
            await until_ready(ctx.http, base, process)
            systems.append(System(name, base, {"service": [process.pid]}))
        yield systems


def _summary(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in names:
        closed = [r[name]["throughput"] for r in runs]
        opened = [r[name]["latency"] for r in runs]
        summary[name] = {
            "throughput_per_second": median(c["per_second"] for c in closed),
            "throughput_p50_ms": median(c["p50_ms"] for c in closed),
            "throughput_p99_ms": median(c["p99_ms"] for c in closed),
            "latency_p50_ms": median(o["p50_ms"] for o in opened),
            "latency_p99_ms": median(o["p99_ms"] for o in opened),
            "latency_max_ms": median(o["max_ms"] for o in opened),
            "errors": sum(
                sum(c["errors"].values()) + sum(o["errors"].values())
                for c, o in zip(closed, opened, strict=True)
            ),
            "other_cores": median(c["cpu"]["other_cores"] for c in closed),
            "service_cores": median(c["cpu"]["service_cores"] for c in closed),
            "driver_cores": median(c["cpu"]["driver_cores"] for c in closed),
            "cpu_ms_per_request": median(c["service_cpu_ms_per_request"] for c in closed),
            "simulator_cpu_ms_per_request": median(
                c.get("simulator_cpu_ms_per_request") for c in closed
            ),
            "total_cpu_ms_per_escalation": median(
                c.get("total_cpu_ms_per_escalation") for c in closed
            ),
        }
    ratios: dict[str, Any] = {}
    for db in ("sqlite", "postgres"):
        esc, ceiling = f"escalator-{db}", f"ceiling-{db}"
        if esc in names and ceiling in names:
            per_run = [
                r[esc]["throughput"]["per_second"] / r[ceiling]["throughput"]["per_second"]
                for r in runs
                if r[ceiling]["throughput"]["per_second"]
            ]
            ratios[f"{esc} / {ceiling}"] = {
                "per_run": [round(x, 3) for x in per_run],
                "median": median(per_run),
            }
        if ceiling in names and "bare" in names:
            per_run = [
                r[ceiling]["throughput"]["per_second"] / r["bare"]["throughput"]["per_second"]
                for r in runs
                if r["bare"]["throughput"]["per_second"]
            ]
            ratios[f"{ceiling} / bare"] = {
                "per_run": [round(x, 3) for x in per_run],
                "median": median(per_run),
            }
    return {"systems": summary, "ratios": ratios}


async def run(ctx: Context) -> dict[str, Any]:
    """Measure every system `ctx.runs` times; per-run figures, medians, same-run ratios."""
    seconds = ctx.pick(3.0, 1.0)
    async with contextlib.AsyncExitStack() as exits:
        postgres_url = None
        if ctx.postgres_admin:
            postgres_url = await exits.enter_async_context(postgres_database(ctx.postgres_admin))
        database = await postgres_context(postgres_url) if postgres_url else None
        systems = await exits.enter_async_context(_systems(ctx, postgres_url))
        names = [s.name for s in systems]
        for system in systems:  # warm-up: imports, caches, connection pools, JIT-free CPython
            await _measure(ctx, system, "warmup", seconds=ctx.pick(1.0, 0.3), closed=True)
        runs: list[dict[str, Any]] = []
        for index in range(ctx.runs):
            this: dict[str, Any] = {}
            for system in systems:
                throughput = await _measure(ctx, system, f"t{index}", seconds=seconds, closed=True)
                latency = await _measure(ctx, system, f"l{index}", seconds=seconds, closed=False)
                this[system.name] = {"throughput": throughput, "latency": latency}
                ctx.log(
                    f"  ack run {index + 1}/{ctx.runs} {system.name}:"
                    f" {throughput['per_second']:.0f}/s at concurrency {CONCURRENCY}"
                    f" (p99 {throughput['p99_ms']:.1f} ms);"
                    f" at {RATE:.0f}/s p50 {latency['p50_ms']:.1f} ms"
                    f" p99 {latency['p99_ms']:.1f} ms; errors"
                    f" {throughput['errors'] or ''}{latency['errors'] or ''};"
                    f" other processes {throughput['cpu']['other_cores']} cores"
                )
            runs.append(this)
        profile = {}
        if ctx.py_spy:
            for system in systems:
                if system.stack is not None:
                    for gil in (False, True):
                        key = f"{system.name} ({'GIL' if gil else 'active threads'})"
                        profile[key] = await _profile(ctx, system, seconds, gil=gil)
        memory = {s.name: rss_mib(s.stack.service.pid) for s in systems if s.stack is not None}
    return {
        "config": {
            "concurrency": CONCURRENCY,
            "rate_per_second": RATE,
            "seconds_per_phase": seconds,
            "runs": ctx.runs,
            "postgres_ceiling_pool": PG_POOL,
            "escalator_postgres_pool": "10 + 10 overflow (escalator/store/engine.py)",
            "systems": names,
        },
        "postgres": database,
        "runs": runs,
        "memory_mib": memory,
        "profile": profile,
        **_summary(runs, names),
    }
