"""Scenario 4, drain under a rate limit: a backlog, TaskRouter allowing N requests a second.

The simulator enforces a token bucket of N requests/s per workspace (burst: N, one second's
worth) and answers 429 (code 20429, no Retry-After, as Twilio's TaskRouter) beyond it. The
driver POSTs a backlog of escalations as fast as escalator takes them, then waits for the
outbox to drain, touching only escalator (any request of ours to the workspace would spend
the limit). Then the limit is lifted and the simulator's `task.created` events and tasks are
read through the twilio SDK.

Achieved rate: (tasks created - the bucket's burst) / (last creation - first creation), since
a token bucket allows `burst + N x span` requests in `span`; reported as a fraction of N.
Lost: an acknowledged escalation with no task; duplicated: one with two or more. A last run
without a limit says how fast escalator drains on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from benchlib import (
    Context,
    CpuMeter,
    median,
)
from load import (
    closed_loop,
    encoded_bodies,
    post_escalation,
)
from processes import (
    Stack,
    metric_samples,
    metrics,
    running_stack,
    sim_control,
    twilio_client,
    until_drained,
)

_COUNTERS = (
    "escalator_tasks_created_total",
    "escalator_task_create_failures_total",
    "escalator_task_create_attempts_total",
    "escalator_twilio_rejects_total",
    "escalator_task_lookup_requests_total",
    "escalator_duplicate_tasks_total",
)


def _read_simulator(stack: Stack, since: float) -> tuple[dict[str, list[float]], Counter[str]]:
    """Creation times by escalation_id (events) and tasks per escalation_id (tasks list)."""
    client = twilio_client(stack.simulator)
    workspace = client.taskrouter.v1.workspaces(stack.simulator.workspace_sid)
    created: dict[str, list[float]] = {}
    for event in workspace.events.list(
        event_type="task.created", start_date=datetime.fromtimestamp(since - 1, UTC), page_size=1000
    ):
        attributes = json.loads((event.event_data or {}).get("task_attributes") or "{}")
        created.setdefault(str(attributes.get("escalation_id")), []).append(
            int(event.event_date_ms) / 1000
        )
    tasks: Counter[str] = Counter()
    for task in workspace.tasks.list(page_size=1000):
        tasks[str(json.loads(task.attributes).get("escalation_id"))] += 1
    return created, tasks


def _counters(text: str) -> dict[str, float]:
    found = {}
    for name in _COUNTERS:
        for labels, value in metric_samples(text, name).items():
            found[f"{name}{{{labels}}}" if labels else name] = value
    return found


async def _run(
    ctx: Context, stack: Stack, tag: str, limit: float | None, backlog: int
) -> dict[str, Any]:
    """One backlog under `limit` requests/s (burst: one second's worth); None: no limit."""
    if limit is not None:
        await sim_control(ctx.http, stack.simulator, "limits", {"rate": limit, "burst": limit})
    before = _counters(await metrics(ctx.http, stack.base))
    url = f"{stack.base}/escalations"
    bodies = encoded_bodies(tag, backlog)

    async def send(n: int) -> tuple[str, str | None]:
        return await post_escalation(ctx.http, url, bodies[n])

    started = time.time()
    meter = CpuMeter({"service": stack.pids, "driver": [os.getpid()]})
    load = await closed_loop(send, concurrency=32, seconds=120, count=backlog)
    acked = {s.value for s in load.ok(("201",)) if s.value}
    within = max(60.0, 4 * backlog / (limit or 100.0))
    try:
        await until_drained(ctx.http, stack.base, within=within)
        drained = True
    except RuntimeError:
        drained = False
    cpu = meter.read()
    after = _counters(await metrics(ctx.http, stack.base))
    await sim_control(ctx.http, stack.simulator, "limits", {"rate": None})
    created, tasks = await asyncio.to_thread(_read_simulator, stack, started)
    times = sorted(t for i in acked for t in created.get(i, ())[:1])
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    # A token bucket allows `burst + rate x span` requests in `span`: the burst is not rate.
    burst = limit or 0.0
    rate = (len(times) - burst) / span if span > 0 else 0.0
    return {
        "limit_per_second": limit,
        "acked": len(acked),
        "post_seconds": round(load.elapsed_s, 2),
        "drained": drained,
        "drain_seconds": round(span, 2) if times else None,
        "achieved_per_second": round(rate, 1),
        "achieved_fraction": round(rate / limit, 3) if limit else None,
        "overall_per_second": round((len(times) - 1) / span, 1) if span > 0 else 0.0,
        "lost": sum(1 for i in acked if tasks.get(i, 0) == 0),
        "duplicated": sum(1 for i in acked if tasks.get(i, 0) > 1),
        "escalator_counters": {
            k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)
        },
        "cpu": cpu,
    }


async def run(ctx: Context) -> dict[str, Any]:
    """`ctx.runs` backlogs under the limit, each on a fresh bucket; then one without a limit:
    how fast escalator drains when TaskRouter does not hold it back (if that were below the
    limit, the limit would not be what the ratio measures)."""
    limit = float(ctx.pick(100, 50))
    backlog = ctx.pick(2000, 300)
    runs = []
    async with running_stack(ctx.http, ctx.workdir, name="drain") as stack:
        for index in range(ctx.runs):
            result = await _run(ctx, stack, f"drain-{index}", limit, backlog)
            runs.append(result)
            ctx.log(
                f"  drain run {index + 1}/{ctx.runs}: {result['acked']} acked in"
                f" {result['post_seconds']} s; {result['achieved_per_second']}/s of {limit:.0f}/s"
                f" ({100 * result['achieved_fraction']:.0f}%), lost {result['lost']},"
                f" duplicated {result['duplicated']}, drained {result['drained']}"
            )
        unlimited = await _run(ctx, stack, "drain-unlimited", None, backlog)
        ctx.log(
            f"  drain without a limit: {unlimited['achieved_per_second']}/s,"
            f" lost {unlimited['lost']}, duplicated {unlimited['duplicated']}"
        )
    return {
        "config": {"limit_per_second": limit, "burst": limit, "backlog": backlog, "runs": ctx.runs},
        "runs": runs,
        "unlimited": unlimited,
        "achieved_fraction": median(r["achieved_fraction"] for r in runs),
        "achieved_per_second": median(r["achieved_per_second"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "duplicated": sum(r["duplicated"] for r in runs),
        "all_drained": all(r["drained"] for r in runs),
    }
