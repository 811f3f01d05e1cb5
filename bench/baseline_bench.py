"""Scenario 2: escalator against the inline baseline it replaces (bench/baseline_app.py).

One simulator with 150 ms added to every task creation (`tasks.create`), as a slow Twilio
would; escalator (on SQLite) and the baseline both create their tasks in it. Two questions:
- **Ack latency**: the caller's wait for a 2xx at a fixed offered rate (open loop), the baseline
  answering after `tasks.create` returns, escalator after its commit.
- **Loss and duplication under faults**: with the simulator failing 10% of creates with a 503,
  answering 10% with a 429, or (a third mode) creating the task and then resetting the
  connection for 10% of them, each system gets the same escalations from a caller that retries
  a failed request twice (0.5 s, then 1 s later), as an AI agent's tool call would. After
  escalator's outbox is drained, the simulator's tasks are read through the twilio SDK and
  counted by `conversation_id`: 0 tasks is a lost escalation, 2 or more a duplicated one.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from typing import Any

from benchlib import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    Context,
    CpuMeter,
    median,
    summarize,
)
from load import (
    encoded_bodies,
    open_loop,
    post_escalation,
)
from processes import (
    Stack,
    running_stack,
    sim_control,
    start_script,
    stop,
    twilio_client,
    until_drained,
    until_ready,
)

ADDED_LATENCY = 0.15
RATE = 50.0
RETRY_DELAYS = (0.5, 1.0)
FAULTS: dict[str, dict[str, Any]] = {
    "503 on 10% of creates": {"status": 503, "probability": 0.1},
    "429 on 10% of creates": {"status": 429, "probability": 0.1},
    "task created, answer lost (reset) on 10%": {"ambiguous": "reset", "probability": 0.1},
}


async def _faults(ctx: Context, stack: Stack, outcome: dict[str, Any] | None) -> None:
    """Only the 150 ms latency, and `outcome` (an error or a lost answer) when given."""
    await sim_control(ctx.http, stack.simulator, "faults")
    latency = {"operation": "tasks.create", "status": None, "latency": ADDED_LATENCY}
    await sim_control(ctx.http, stack.simulator, "faults", {**latency, "times": None})
    if outcome:
        fault = {"operation": "tasks.create", **outcome, "times": None}
        await sim_control(ctx.http, stack.simulator, "faults", fault)


async def _latency(ctx: Context, url: str, tag: str, seconds: float, pids: list[int]) -> Any:
    bodies = encoded_bodies(tag, round(RATE * seconds))

    async def send(n: int) -> tuple[str, str | None]:
        return await post_escalation(ctx.http, url, bodies[n])

    meter = CpuMeter({"system": pids, "driver": [os.getpid()]})
    load = await open_loop(send, rate=RATE, seconds=seconds)
    return {**load.summary(), "cpu": meter.read()}


async def _with_retries(ctx: Context, url: str, tag: str, count: int) -> dict[str, Any]:
    """Send `count` escalations at RATE; a failed one is retried (RETRY_DELAYS); outcomes."""
    bodies = encoded_bodies(tag, count)
    attempts: Counter[int] = Counter()
    final: dict[int, str] = {}
    first: dict[int, str] = {}

    async def send(n: int) -> tuple[str, str | None]:
        status, value = await post_escalation(ctx.http, url, bodies[n])
        first[n] = status
        for delay in RETRY_DELAYS:
            if status in ("200", "201"):
                break
            await asyncio.sleep(delay)
            attempts[n] += 1
            status, value = await post_escalation(ctx.http, url, bodies[n])
        final[n] = status
        return status, value

    load = await open_loop(send, rate=RATE, seconds=count / RATE)
    return {
        "first": first,
        "final": final,
        "retries": sum(attempts.values()),
        "first_attempt_latency": summarize(
            s.done - s.due for s in load.sent if s.n not in attempts
        ),
    }


def _count_tasks(stack: Stack) -> Counter[str]:
    """Tasks per conversation_id, read through the twilio SDK (sync, in a thread)."""
    client = twilio_client(stack.simulator)
    tasks = client.taskrouter.v1.workspaces(stack.simulator.workspace_sid).tasks.list(
        page_size=1000
    )
    found: Counter[str] = Counter()
    for task in tasks:
        found[str(json.loads(task.attributes).get("conversation_id"))] += 1
    return found


def _outcomes(sent: dict[str, Any], tag: str, tasks: Counter[str]) -> dict[str, Any]:
    ok = ("200", "201")
    per_task = {n: tasks.get(f"bench-{tag}-{n:06d}", 0) for n in sent["final"]}
    acked = {n for n, status in sent["final"].items() if status in ok}
    return {
        "escalations": len(sent["final"]),
        "first_attempt_failed": sum(1 for s in sent["first"].values() if s not in ok),
        "retries_sent": sent["retries"],
        "caller_told_failure": len(sent["final"]) - len(acked),
        "final_statuses": dict(Counter(sent["final"].values())),
        "with_one_task": sum(1 for c in per_task.values() if c == 1),
        "lost": sum(1 for c in per_task.values() if c == 0),
        "acked_but_lost": sum(1 for n, c in per_task.items() if c == 0 and n in acked),
        "duplicated": sum(1 for c in per_task.values() if c > 1),
        "extra_tasks": sum(c - 1 for c in per_task.values() if c > 1),
        "failed_but_task_exists": sum(1 for n, c in per_task.items() if c and n not in acked),
        "first_attempt_latency": sent["first_attempt_latency"],
    }


async def run(ctx: Context) -> dict[str, Any]:
    """The latency comparison over `ctx.runs` runs, then one pass per fault mode."""
    seconds = ctx.pick(5.0, 2.0)
    count = ctx.pick(250, 60)
    async with running_stack(ctx.http, ctx.workdir, name="baseline-escalator") as stack:
        baseline, base = start_script(
            ctx.workdir,
            "baseline_app.py",
            *("--taskrouter-url", stack.simulator.url),
            *("--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN),
            *("--workspace-sid", stack.simulator.workspace_sid),
            *("--workflow-sid", stack.simulator.workflow_sid),
            name="baseline",
        )
        try:
            await until_ready(ctx.http, base, baseline)
            systems = {
                "baseline": (f"{base}/escalations", [baseline.pid]),
                "escalator": (f"{stack.base}/escalations", stack.pids),
            }
            await _faults(ctx, stack, None)
            for name, (url, pids) in systems.items():  # warm-up
                await _latency(ctx, url, f"{name}-warmup", 1.0, pids)
            await until_drained(ctx.http, stack.base, within=60)
            latency_runs: list[dict[str, Any]] = []
            for index in range(ctx.runs):
                this = {}
                for name, (url, pids) in systems.items():
                    this[name] = await _latency(ctx, url, f"{name}-l{index}", seconds, pids)
                    await until_drained(ctx.http, stack.base, within=60)
                ctx.log(
                    f"  baseline run {index + 1}/{ctx.runs} at {RATE:.0f}/s, +150 ms creates:"
                    + "".join(
                        f" {n} p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms"
                        f" ({sum(r['errors'].values())} errors);"
                        for n, r in this.items()
                    )
                )
                latency_runs.append(this)
            sent: dict[str, dict[str, Any]] = {}
            for mode_index, (mode, outcome) in enumerate(FAULTS.items()):
                await _faults(ctx, stack, outcome)
                for name, (url, _) in systems.items():
                    tag = f"{name}-f{mode_index}"
                    sent[f"{mode}|{name}"] = await _with_retries(ctx, url, tag, count)
                drained = await until_drained(ctx.http, stack.base, within=180)
                ctx.log(
                    f"  baseline faults '{mode}': sent; escalator drained {drained:.1f} s later"
                )
            await sim_control(ctx.http, stack.simulator, "faults")
            tasks = await asyncio.to_thread(_count_tasks, stack)
        finally:
            stop(baseline)
    faults: dict[str, Any] = {}
    for mode_index, mode in enumerate(FAULTS):
        faults[mode] = {}
        for name in systems:
            result = _outcomes(sent[f"{mode}|{name}"], f"{name}-f{mode_index}", tasks)
            faults[mode][name] = result
            ctx.log(
                f"  {mode}: {name} lost {result['lost']}, duplicated {result['duplicated']},"
                f" caller told failure {result['caller_told_failure']}"
                f" of {result['escalations']}"
            )
    return {
        "config": {
            "added_latency_s": ADDED_LATENCY,
            "rate_per_second": RATE,
            "seconds_per_latency_run": seconds,
            "escalations_per_fault_mode": count,
            "caller_retry_delays_s": list(RETRY_DELAYS),
            "baseline_threads": 32,
            "runs": ctx.runs,
        },
        "latency_runs": latency_runs,
        "latency": {
            name: {
                "p50_ms": median(r[name]["p50_ms"] for r in latency_runs),
                "p99_ms": median(r[name]["p99_ms"] for r in latency_runs),
                "max_ms": median(r[name]["max_ms"] for r in latency_runs),
                "errors": sum(sum(r[name]["errors"].values()) for r in latency_runs),
            }
            for name in systems
        },
        "faults": faults,
    }
