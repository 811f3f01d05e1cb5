"""Task creations per second against the TaskRouter simulator, over loopback.

The simulator runs in its own process (this script with `--serve`); this process drives it
with aiohttp at a fixed concurrency, POSTing form-encoded task creations with Basic auth and
the headers the twilio SDK sends. Each run starts a fresh simulator; the summary is the median
of the runs. Usage: `python bench/simulator_bench.py --out results.json` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import itertools
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import cpu_model, percentile

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "bench-token"  # noqa: S105 - the local simulator's, not a secret
GOAL_PER_SECOND = 1000
_READY = "READY "

# What twilio-python 9.x sends with every create (twilio.base.client_base.get_headers).
_SDK_HEADERS = {
    "User-Agent": (
        f"twilio-python/{version('twilio')} ({platform.system()} {platform.machine()})"
        f" Python/{platform.python_version()}"
    ),
    "X-Twilio-Client": f"python-{version('twilio')}",
    "Accept-Charset": "utf-8",
    "Accept": "application/json",
    "Authorization": "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode(),
}


@dataclass
class RunResult:
    """One run: how many tasks were created, how fast, and the latency distribution."""

    created: int
    errors: int
    elapsed_s: float
    creations_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float


# ---------------------------------------------------------------- the simulator process


async def _serve(profile: str | None) -> None:
    from escalator.simulator import start_simulator

    profiler = cProfile.Profile()
    simulator = await start_simulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    print(f"{_READY}{simulator.url}", flush=True)
    if profile:
        profiler.enable()
    try:
        # Serve until the driver closes our stdin (or dies).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        if profile:
            profiler.disable()
            profiler.dump_stats(profile)
        await simulator.close()


# ---------------------------------------------------------------- the driver


def _attributes(n: int) -> str:
    """An escalation-shaped task, about 600 characters, as escalator builds them."""
    return json.dumps(
        {
            "escalation_id": f"esc-{n:08d}",
            "conversation_id": f"conv-{n:08d}",
            "reason_code": "billing_dispute" if n % 3 else "technical",
            "skills": ["billing"] if n % 3 else ["support"],
            "language": "es" if n % 5 == 0 else "en",
            "priority_hint": n % 4,
            "channel": "chat",
            "customer": {"tier": "gold" if n % 7 == 0 else "standard", "language": "en"},
            "ai_summary": "Customer disputes a charge on the March invoice. " * 6,
        },
        separators=(",", ":"),
    )


async def _post(session: aiohttp.ClientSession, url: str, data: dict[str, str]) -> Any:
    async with session.post(url, data=data) as response:
        body = await response.json()
        if response.status != 201:
            raise RuntimeError(f"{url}: HTTP {response.status} {body}")
        return body


async def _provision(session: aiohttp.ClientSession, base: str, workers: int) -> tuple[str, str]:
    """A workspace with two queues, a two-filter workflow and `workers` available workers."""
    ws = (await _post(session, f"{base}/v1/Workspaces", {"FriendlyName": "bench"}))["sid"]
    root = f"{base}/v1/Workspaces/{ws}"
    queues = {}
    for name, target in (("billing", "skills HAS 'billing'"), ("support", "1==1")):
        queue = await _post(
            session, f"{root}/TaskQueues", {"FriendlyName": name, "TargetWorkers": target}
        )
        queues[name] = queue["sid"]
    routing = {
        "task_routing": {
            "filters": [
                {
                    "filter_friendly_name": "billing",
                    "expression": "skills HAS 'billing' AND language IN ['en', 'es']",
                    "targets": [{"queue": queues["billing"], "timeout": 300}],
                },
                {
                    "filter_friendly_name": "gold",
                    "expression": "customer.tier == 'gold'",
                    "targets": [{"queue": queues["support"], "priority": 10}],
                },
            ],
            "default_filter": {"queue": queues["support"]},
        }
    }
    workflow = await _post(
        session,
        f"{root}/Workflows",
        {"FriendlyName": "bench", "Configuration": json.dumps(routing)},
    )
    async with session.get(f"{root}/Activities", params={"FriendlyName": "Available"}) as answer:
        activities = (await answer.json())["activities"]
    available = next(a["sid"] for a in activities if a["friendly_name"] == "Available")
    for n in range(workers):
        await _post(
            session,
            f"{root}/Workers",
            {
                "FriendlyName": f"agent{n}",
                "Attributes": json.dumps({"skills": ["billing", "support"]}),
                "ActivitySid": available,
            },
        )
    return ws, workflow["sid"]


async def _drive(
    session: aiohttp.ClientSession,
    url: str,
    workflow_sid: str,
    *,
    count: int,
    concurrency: int,
    deadline: float,
) -> tuple[list[float], int, float]:
    """Create up to `count` tasks from `concurrency` workers; latencies, errors, seconds."""
    latencies: list[float] = []
    errors = 0
    numbers = itertools.count()

    async def worker() -> None:
        nonlocal errors
        while (n := next(numbers)) < count and time.perf_counter() < deadline:
            data = {"Attributes": _attributes(n), "WorkflowSid": workflow_sid}
            started = time.perf_counter()
            async with session.post(url, data=data) as response:
                await response.read()
                ok = response.status == 201
            latencies.append(time.perf_counter() - started)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


async def _start_server(profile: str | None) -> tuple[asyncio.subprocess.Process, str]:
    command = [sys.executable, __file__, "--serve"]
    if profile:
        command += ["--profile", profile]
    server = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert server.stdout is not None
    line = (await asyncio.wait_for(server.stdout.readline(), 30)).decode()
    if not line.startswith(_READY):
        raise RuntimeError(f"the simulator did not start: {line!r}")
    return server, line.removeprefix(_READY).strip()


async def _stop_server(server: asyncio.subprocess.Process) -> None:
    assert server.stdin is not None
    server.stdin.close()
    try:
        await asyncio.wait_for(server.wait(), 30)
    except TimeoutError:
        server.kill()
        await server.wait()


async def _run(args: argparse.Namespace, index: int) -> RunResult:
    profile = f"{args.profile}.{index}" if args.profile else None
    server, base = await _start_server(profile)
    try:
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector, headers=_SDK_HEADERS) as session:
            ws, workflow = await _provision(session, base, args.workers)
            url = f"{base}/v1/Workspaces/{ws}/Tasks"
            # One time bound for the whole run, warm-up included.
            deadline = time.perf_counter() + args.max_seconds
            await _drive(
                session,
                url,
                workflow,
                count=args.warmup,
                concurrency=args.concurrency,
                deadline=deadline,
            )
            latencies, errors, elapsed = await _drive(
                session,
                url,
                workflow,
                count=args.count,
                concurrency=args.concurrency,
                deadline=deadline,
            )
    finally:
        await _stop_server(server)
    ordered = sorted(latencies) or [0.0]  # the warm-up may have used the whole time bound
    created = len(latencies) - errors
    return RunResult(
        created=created,
        errors=errors,
        elapsed_s=round(elapsed, 3),
        creations_per_second=round(created / elapsed, 1),
        p50_ms=round(percentile(ordered, 0.5) * 1000, 2),
        p99_ms=round(percentile(ordered, 0.99) * 1000, 2),
        max_ms=round(ordered[-1] * 1000, 2),
    )


def _machine() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "aiohttp": version("aiohttp"),
    }


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for index in range(args.runs):
        result = await _run(args, index)
        runs.append(result)
        print(
            f"run {index + 1}/{args.runs}: {result.created} created, {result.errors} errors"
            f" in {result.elapsed_s:.2f} s = {result.creations_per_second:.0f}/s,"
            f" p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms",
            flush=True,
        )
    summary = {
        "creations_per_second": statistics.median(r.creations_per_second for r in runs),
        "p50_ms": statistics.median(r.p50_ms for r in runs),
        "p99_ms": statistics.median(r.p99_ms for r in runs),
        "errors": sum(r.errors for r in runs),
    }
    return {
        "benchmark": "simulator task creations over loopback",
        "machine": _machine(),
        "config": {
            k: getattr(args, k)
            for k in ("count", "warmup", "concurrency", "runs", "workers", "max_seconds")
        },
        "runs": [asdict(r) for r in runs],
        "summary": summary,
        "goal_per_second": GOAL_PER_SECOND,
        "meets_goal": summary["creations_per_second"] >= GOAL_PER_SECOND and not summary["errors"],
    }


def parser() -> argparse.ArgumentParser:
    """The command line; `run.py` builds its own argument lists for it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="task creations per run")
    parser.add_argument("--warmup", type=int, default=1_000, help="unmeasured creations first")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--runs", type=int, default=3, help="runs, each on a fresh simulator")
    parser.add_argument("--workers", type=int, default=0, help="available workers to route to")
    parser.add_argument(
        "--max-seconds", type=float, default=60.0, help="time bound per run, warm-up included"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--profile", help="cProfile the simulator, stats to PROFILE.<run>")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    return parser


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark as `args` say; the results."""
    return await _bench(args)


def main() -> int:
    """Parse arguments; serve the simulator or drive it and print (and write) the results."""
    args = parser().parse_args()
    if args.serve:
        asyncio.run(_serve(args.profile))
        return 0
    results = asyncio.run(_bench(args))
    machine, summary = results["machine"], results["summary"]
    print(
        f"\n{machine['cpu_model']}, {machine['cpu_count']} CPUs, Python {machine['python']}\n"
        f"median of {args.runs} runs: {summary['creations_per_second']:.0f} creations/s,"
        f" p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms"
        f" (concurrency {args.concurrency}; goal >= {GOAL_PER_SECOND}/s:"
        f" {'met' if results['meets_goal'] else 'NOT met'})"
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
