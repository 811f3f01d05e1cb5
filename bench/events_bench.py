"""TaskRouter event callbacks ingested per second by escalator on SQLite, signed, over loopback.

Two child processes: `escalator simulate --seed` (the TaskRouter the service creates its tasks
in) and `escalator serve` on a SQLite file in a temporary directory (WAL, `synchronous=FULL`: the
defaults). This process creates escalations through `POST /escalations`, waits until each has its
task, then POSTs signed event callbacks for those tasks to `/taskrouter/events` at a fixed
concurrency, signatures computed before the clock starts. Each run uses fresh escalations and
fresh events; a second, separately timed pass re-sends some of them (the duplicate path).
Usage: `python bench/events_bench.py --out results.json` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from benchlib import (
    ACCOUNT_SID,
    API_KEY,
    AUTH_TOKEN,
    PACKAGES,
    PUBLIC_URL,
    CpuMeter,
    commit_ceiling,
    cpu_model,
    filesystem,
    percentile,
)
from load import (
    escalation_body,
)
from processes import (
    Simulator,
    free_port,
    metrics,
    outbox_backlog,
    postgres_context,
    postgres_database,
    sim_get,
    sim_list,
    start_service,
    start_simulator,
    stop,
    until_ready,
)
from twilio.request_validator import RequestValidator

EVENTS_PATH = "/taskrouter/events"
GOAL_PER_SECOND = 2000
# One reservation rejected, another accepted, then the task completed: what a real task sees.
_LIFECYCLE = (
    "reservation.created",
    "reservation.rejected",
    "reservation.created",
    "reservation.accepted",
    "task.completed",
)
_TASK_STATUS = {
    "reservation.created": "reserved",
    "reservation.rejected": "pending",
    "reservation.accepted": "assigned",
    "task.completed": "completed",
}
# What TaskRouter sends with a callback besides the form and its signature.
_CALLBACK_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "User-Agent": "TwilioProxy/1.1",
    "Accept": "*/*",
}


@dataclass(frozen=True)
class Task:
    """A task the service created in the simulator, as the Tasks API lists it."""

    sid: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Workspace:
    """What the callbacks name besides the task: the workspace and its workers."""

    sid: str
    name: str
    workers: list[dict[str, Any]]


@dataclass(frozen=True)
class Callback:
    """One event callback, ready to send: its form body and its signature."""

    body: bytes
    signature: str


@dataclass
class Pass:
    """One timed pass of callbacks: answers, rate, latency and who used the CPUs."""

    sent: int
    ingested: int
    errors: dict[str, int]
    elapsed_s: float
    events_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_results: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """One run: fresh escalations, their events, then some of them again."""

    escalations: int
    setup_s: float
    setup_refusals: dict[str, int]
    fresh: Pass
    duplicates: Pass | None


# ---------------------------------------------------------------- child processes


def _start_simulator(workdir: Path) -> Simulator:
    """`escalator simulate --seed` without the EvaluateTaskAttributes limit (no lookups here)."""
    return start_simulator(workdir, "--evaluate-per-second", "off")


def _start_service(
    workdir: Path, simulator: Simulator, port: int, args: argparse.Namespace
) -> subprocess.Popen[str]:
    """`escalator serve` on SQLite with its default durability (or on `--database-url`)."""
    return start_service(
        workdir,
        simulator,
        port,
        database_url=args.database_url,
        log_level=args.log_level,
        profile=args.profile,
    )


# ---------------------------------------------------------------- reading service and simulator


async def _workspace(session: aiohttp.ClientSession, simulator: Simulator) -> Workspace:
    root = f"{simulator.url}/v1/Workspaces/{simulator.workspace_sid}"
    workspace = await sim_get(session, root)
    activities = {
        a["sid"]: a["friendly_name"]
        for a in await sim_list(session, f"{root}/Activities?PageSize=100", "activities")
    }
    workers = await sim_list(session, f"{root}/Workers?PageSize=100", "workers")
    for worker in workers:
        worker["activity_name"] = activities.get(worker["activity_sid"], "")
    return Workspace(simulator.workspace_sid, workspace["friendly_name"], workers)


def _event_results(text: str) -> Counter[str]:
    """`escalator_taskrouter_events_total` summed by result (applied, duplicate, ...)."""
    totals: Counter[str] = Counter()
    pattern = r"^escalator_taskrouter_events_total\{(.*)\} (\S+)$"
    for labels, value in re.findall(pattern, text, re.MULTILINE):
        result = re.search(r'result="([^"]*)"', labels)
        totals[result.group(1) if result else "?"] += int(float(value))
    return totals


# ---------------------------------------------------------------- setup of one run


async def _escalate(
    session: aiohttp.ClientSession, base: str, tag: str, count: int, refusals: Counter[str]
) -> list[str]:
    """Create `count` escalations, retrying 503s as a client should (counted); their ids."""
    ids: list[str] = []
    numbers = iter(range(count))

    async def worker() -> None:
        for n in numbers:
            body = escalation_body(tag, n)
            for _ in range(10):
                async with session.post(
                    f"{base}/escalations",
                    json=body,
                    headers={"Authorization": f"Bearer {API_KEY}"},
                ) as answer:
                    payload = await answer.json()
                    if answer.status in (200, 201):
                        ids.append(payload["id"])
                        break
                    if answer.status != 503:
                        raise RuntimeError(f"POST /escalations: HTTP {answer.status} {payload}")
                    refusals["POST /escalations 503"] += 1
                    await asyncio.sleep(float(answer.headers.get("Retry-After") or 1))
            else:
                raise RuntimeError("POST /escalations: 503 ten times in a row")

    await asyncio.gather(*(worker() for _ in range(8)))
    return ids


async def _tasks_for(
    session: aiohttp.ClientSession,
    base: str,
    simulator: Simulator,
    escalation_ids: list[str],
    within: float,
) -> list[Task]:
    """Each escalation's task, once the dispatcher has created and recorded them all."""
    wanted = set(escalation_ids)
    url = f"{simulator.url}/v1/Workspaces/{simulator.workspace_sid}/Tasks?PageSize=1000"
    deadline = time.monotonic() + within
    while True:
        found: dict[str, Task] = {}
        for item in await sim_list(session, url, "tasks"):
            escalation_id = json.loads(item["attributes"]).get("escalation_id")
            if escalation_id in wanted:
                found[escalation_id] = Task(item["sid"], item)
        if len(found) == len(wanted) and outbox_backlog(await metrics(session, base)) == 0:
            return [found[i] for i in escalation_ids]
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(found)} of {len(wanted)} tasks after {within} s")
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------- the callbacks


def _callbacks(tasks: list[Task], workspace: Workspace, timestamp: int) -> list[Callback]:
    """Each task's lifecycle, phase by phase across tasks (a task's events arrive in order and
    far apart, as TaskRouter's do), stamped now (epoch seconds, as TaskRouter does: events of
    different tasks or reservations differ without a distinct Timestamp), signed. A stamp in
    the past would make every escalation look stale to the reconciler, which would re-read
    them all from the simulator during the measurement."""
    validator = RequestValidator(AUTH_TOKEN)
    url = PUBLIC_URL + EVENTS_PATH
    reservations = {t.sid: ("WR" + uuid.uuid4().hex, "WR" + uuid.uuid4().hex) for t in tasks}
    workers = workspace.workers
    callbacks = []
    for phase, event_type in enumerate(_LIFECYCLE):
        offer = min(phase // 2, 1)  # the first reservation, then the second (another worker)
        for n, task in enumerate(tasks):
            params = _event_params(
                event_type,
                phase,
                task=task,
                workspace=workspace,
                worker=workers[(n + offer) % len(workers)],
                reservation_sid=reservations[task.sid][offer],
                timestamp=str(timestamp),
            )
            callbacks.append(
                Callback(urlencode(params).encode(), validator.compute_signature(url, params))
            )
    return callbacks


def _event_params(
    event_type: str,
    phase: int,
    *,
    task: Task,
    workspace: Workspace,
    worker: dict[str, Any],
    reservation_sid: str,
    timestamp: str,
) -> dict[str, str]:
    """One callback's form: the fields TaskRouter's event callbacks carry, as the simulator
    (escalator/simulator/router.py) sends them."""
    t = task.fields
    name = worker["friendly_name"]
    on_reservation = event_type.startswith("reservation.")
    verb = event_type.split(".", 1)[1]
    now = int(time.time())
    params = {
        "EventType": event_type,
        "AccountSid": ACCOUNT_SID,
        "WorkspaceSid": workspace.sid,
        "WorkspaceName": workspace.name,
        "EventDescription": (
            f"Reservation {reservation_sid} {verb}" + (f" for {name}" if verb == "created" else "")
            if on_reservation
            else "Task completed"
        ),
        "ResourceType": "Reservation" if on_reservation else "Task",
        "ResourceSid": reservation_sid if on_reservation else task.sid,
        "Timestamp": timestamp,
        "TaskSid": task.sid,
        "TaskAttributes": t["attributes"],
        "TaskAge": str(30 + 20 * phase),
        "TaskPriority": str(t["priority"]),
        "TaskAssignmentStatus": _TASK_STATUS[event_type],
        "TaskDateCreated": str(now - 60),
        "TaskVersion": str(2 + phase),
        "TaskTimeout": str(t["timeout"]),
        "TaskChannelSid": t["task_channel_sid"],
        "TaskChannelUniqueName": t["task_channel_unique_name"],
        "TaskQueueSid": t["task_queue_sid"] or "",
        "TaskQueueName": t.get("task_queue_friendly_name") or "",
        "TaskQueueEnteredDate": str(now - 55),
        "WorkflowSid": t["workflow_sid"],
        "WorkflowName": t.get("workflow_friendly_name") or "",
    }
    if on_reservation:
        params |= {
            "ReservationSid": reservation_sid,
            "WorkerSid": worker["sid"],
            "WorkerName": name,
            "WorkerAttributes": worker["attributes"],
            "WorkerActivitySid": worker["activity_sid"],
            "WorkerActivityName": worker["activity_name"],
            "WorkerVersion": str(3 + phase),
        }
    else:
        params["TaskCompletedReason"] = "Conversation closed by the agent"
    return params


# ---------------------------------------------------------------- timing


def _cpu_meter(service_pid: int) -> CpuMeter:
    """Who uses the CPUs during a pass: the service, this driver, PostgreSQL, everything else
    (on a shared machine, other work steals cores from the service and the number with them)."""
    return CpuMeter({"service": [service_pid], "driver": [os.getpid()]})


def _cpu_of_pass(meter: CpuMeter, ingested: int) -> dict[str, Any]:
    cpu = meter.read()
    service = cpu["service_cpu_s"]
    cpu["service_cpu_ms_per_event"] = round(1000 * service / ingested, 3) if ingested else 0.0
    return cpu


async def _fire(
    session: aiohttp.ClientSession,
    url: str,
    callbacks: list[Callback],
    *,
    concurrency: int,
    deadline: float,
) -> tuple[list[float], Counter[str], float]:
    """Send callbacks from `concurrency` workers until done or `deadline`: latencies, answers
    by status (or exception), seconds."""
    latencies: list[float] = []
    answers: Counter[str] = Counter()
    queue = iter(callbacks)

    async def worker() -> None:
        for callback in queue:
            if time.perf_counter() >= deadline:
                return
            headers = {**_CALLBACK_HEADERS, "X-Twilio-Signature": callback.signature}
            started = time.perf_counter()
            try:
                async with session.post(url, data=callback.body, headers=headers) as answer:
                    await answer.read()
                    status = str(answer.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            latencies.append(time.perf_counter() - started)
            answers[status] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, answers, time.perf_counter() - started


async def _timed_pass(
    session: aiohttp.ClientSession,
    base: str,
    service_pid: int,
    callbacks: list[Callback],
    args: argparse.Namespace,
) -> Pass:
    before = _event_results(await metrics(session, base))
    meter = _cpu_meter(service_pid)
    latencies, answers, elapsed = await _fire(
        session,
        base + EVENTS_PATH,
        callbacks,
        concurrency=args.concurrency,
        deadline=time.perf_counter() + args.max_seconds,
    )
    ingested = answers.pop("204", 0)  # only a 204 says the event is stored
    cpu = _cpu_of_pass(meter, ingested)
    after = _event_results(await metrics(session, base))
    ordered = sorted(latencies) or [0.0]
    return Pass(
        sent=len(latencies),
        ingested=ingested,
        errors=dict(answers),
        elapsed_s=round(elapsed, 3),
        events_per_second=round(ingested / elapsed, 1) if elapsed else 0.0,
        p50_ms=round(percentile(ordered, 0.5) * 1000, 2),
        p99_ms=round(percentile(ordered, 0.99) * 1000, 2),
        max_ms=round(ordered[-1] * 1000, 2),
        server_results={k: after[k] - before[k] for k in after if after[k] != before[k]},
        cpu=cpu,
    )


@dataclass
class _Session:
    """What every run shares: the HTTP session, the service, the simulator's workspace."""

    http: aiohttp.ClientSession
    base: str
    service_pid: int
    simulator: Simulator
    workspace: Workspace
    stats: dict[str, list[int]] = field(default_factory=lambda: {"attributes": [], "form": []})


async def _run(
    bench: _Session, args: argparse.Namespace, *, tag: str, escalations: int
) -> RunResult:
    started = time.perf_counter()
    refusals: Counter[str] = Counter()
    ids = await _escalate(bench.http, bench.base, tag, escalations, refusals)
    tasks = await _tasks_for(bench.http, bench.base, bench.simulator, ids, within=60)
    callbacks = _callbacks(tasks, bench.workspace, int(time.time()))
    bench.stats["attributes"] += [len(t.fields["attributes"]) for t in tasks]
    bench.stats["form"] += [len(c.body) for c in callbacks]
    setup = time.perf_counter() - started
    fresh = await _timed_pass(bench.http, bench.base, bench.service_pid, callbacks, args)
    duplicates = None
    if args.duplicates:
        duplicates = await _timed_pass(
            bench.http, bench.base, bench.service_pid, callbacks[: args.duplicates], args
        )
    return RunResult(escalations, round(setup, 2), dict(refusals), fresh, duplicates)


# ---------------------------------------------------------------- the machine


async def _database(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    if args.database_url:
        return {"engine": "postgresql", **await postgres_context(args.database_url)}
    return {
        "engine": "sqlite",
        "sqlite": sqlite3.sqlite_version,
        "journal_mode": "WAL",
        "synchronous": "FULL",
        "filesystem": filesystem(workdir),
    }


def _machine(database: dict[str, Any]) -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": {name: version(name) for name in PACKAGES},
        "database": database,
    }


# ---------------------------------------------------------------- the benchmark


async def _bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    ceiling = commit_ceiling(workdir)
    database = await _database(workdir, args)
    simulator = _start_simulator(workdir)
    port = free_port()
    service = _start_service(workdir, simulator, port, args)
    base = f"http://127.0.0.1:{port}"
    # For an outside profiler: py-spy record --pid PID (see bench/README.md).
    print(f"escalator serve: pid {service.pid} at {base}, data in {workdir}", flush=True)
    runs: list[RunResult] = []
    try:
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:
            await until_ready(http, base, service)
            bench = _Session(
                http=http,
                base=base,
                service_pid=service.pid,
                simulator=simulator,
                workspace=await _workspace(http, simulator),
            )
            if args.warmup:
                await _run(bench, args, tag="warmup", escalations=args.warmup)
            for index in range(args.runs):
                result = await _run(bench, args, tag=f"r{index}", escalations=args.escalations)
                runs.append(result)
                _print_run(index, args.runs, result)
    finally:
        stop(service)
        stop(simulator.process)
    return _results(args, database, runs, ceiling, bench.stats)


def _print_run(index: int, total: int, result: RunResult) -> None:
    fresh, dup = result.fresh, result.duplicates
    line = (
        f"run {index + 1}/{total}: {fresh.ingested}/{fresh.sent} events ingested"
        f" ({sum(fresh.errors.values())} errors) in {fresh.elapsed_s:.2f} s"
        f" = {fresh.events_per_second:.0f}/s, p50 {fresh.p50_ms:.1f} ms,"
        f" p99 {fresh.p99_ms:.1f} ms; server: {fresh.server_results};"
        f" cores: service {fresh.cpu.get('service_cores')}, driver"
        f" {fresh.cpu.get('driver_cores')}, others {fresh.cpu.get('other_cores')}"
    )
    if dup is not None:
        line += (
            f"; duplicates {dup.events_per_second:.0f}/s, p50 {dup.p50_ms:.1f} ms,"
            f" p99 {dup.p99_ms:.1f} ms"
        )
    print(line, flush=True)


def _summary(passes: list[Pass]) -> dict[str, Any]:
    return {
        "events_per_second": statistics.median(p.events_per_second for p in passes),
        "p50_ms": statistics.median(p.p50_ms for p in passes),
        "p99_ms": statistics.median(p.p99_ms for p in passes),
        "service_cpu_ms_per_event": statistics.median(
            p.cpu.get("service_cpu_ms_per_event", 0.0) for p in passes
        ),
        "other_cores": statistics.median(p.cpu.get("other_cores", 0.0) for p in passes),
        "sent": sum(p.sent for p in passes),
        "ingested": sum(p.ingested for p in passes),
        "errors": sum(sum(p.errors.values()) for p in passes),
    }


def _results(
    args: argparse.Namespace,
    database: dict[str, Any],
    runs: list[RunResult],
    ceiling: float,
    stats: dict[str, list[int]],
) -> dict[str, Any]:
    summary = _summary([r.fresh for r in runs])
    dups = [r.duplicates for r in runs if r.duplicates is not None]
    config = {
        k: getattr(args, k)
        for k in ("escalations", "warmup", "concurrency", "runs", "duplicates", "max_seconds")
    }
    return {
        "benchmark": "escalator POST /taskrouter/events, signed,"
        f" {'PostgreSQL' if args.database_url else 'SQLite'}, over loopback",
        "machine": _machine(database),
        "config": config
        | {
            "log_level": args.log_level,
            "events_per_escalation": list(_LIFECYCLE),
            "public_url": PUBLIC_URL,
            "task_attributes_chars_median": statistics.median(stats["attributes"] or [0]),
            "form_bytes_median": statistics.median(stats["form"] or [0]),
        },
        "runs": [asdict(r) for r in runs],
        "summary": summary,
        "duplicates_summary": _summary(dups) if dups else None,
        "sqlite_commit_ceiling_per_second": ceiling,
        "goal_per_second": GOAL_PER_SECOND,
        "meets_goal": summary["events_per_second"] >= GOAL_PER_SECOND and not summary["errors"],
    }


def _verdict(results: dict[str, Any], args: argparse.Namespace) -> str:
    machine, summary, dups = results["machine"], results["summary"], results["duplicates_summary"]
    database = machine["database"]
    if database["engine"] == "sqlite":
        store = f"SQLite {database['sqlite']} WAL synchronous=FULL on {database['filesystem']}"
    else:
        store = f"PostgreSQL {database['version']}"
    lines = [
        f"\n{machine['cpu_model']}, {machine['cpu_count']} CPUs, Python {machine['python']},"
        f" {store}; bare SQLite commit ceiling"
        f" {results['sqlite_commit_ceiling_per_second']:.0f}/s; service"
        f" {summary['service_cpu_ms_per_event']:.2f} ms CPU per event,"
        f" other processes {summary['other_cores']:.2f} cores"
    ]
    if dups:
        lines.append(
            f"duplicates: median {dups['events_per_second']:.0f}/s,"
            f" p50 {dups['p50_ms']:.1f} ms, p99 {dups['p99_ms']:.1f} ms"
        )
    lines.append(
        f"median of {args.runs} runs: {summary['events_per_second']:.0f} events/s ingested,"
        f" p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms,"
        f" {summary['errors']} errors (concurrency {args.concurrency});"
        f" goal >= {GOAL_PER_SECOND}/s: {'met' if results['meets_goal'] else 'NOT met'}"
        f" ({100 * summary['events_per_second'] / GOAL_PER_SECOND:.0f}% of it)"
    )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The command line; `run.py` builds its own argument lists for it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--escalations", type=int, default=1000, help="escalations per run")
    parser.add_argument("--warmup", type=int, default=100, help="escalations of an unmeasured run")
    parser.add_argument("--concurrency", type=int, default=32, help="callbacks in flight")
    parser.add_argument("--runs", type=int, default=3, help="measured runs, fresh events each")
    parser.add_argument(
        "--duplicates", type=int, default=500, help="callbacks re-sent per run, timed apart"
    )
    parser.add_argument("--max-seconds", type=float, default=10.0, help="time bound per pass")
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="run on PostgreSQL: a fresh database on this server (e.g."
        " postgresql://postgres@127.0.0.1:5432/postgres), dropped afterwards",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--profile", help="run the service under cProfile, stats to PROFILE")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark as `args` say, in a temporary directory; the results."""
    workdir = Path(tempfile.mkdtemp(prefix="escalator-events-bench-"))
    args.database_url = None
    try:
        if not args.postgres:
            return await _bench(args, workdir)
        async with postgres_database(args.postgres) as url:
            args.database_url = url
            return await _bench(args, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    """Run the benchmark, print one line per run and a verdict, and write the JSON."""
    args = parser().parse_args()
    results = asyncio.run(bench(args))
    print(_verdict(results, args))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
