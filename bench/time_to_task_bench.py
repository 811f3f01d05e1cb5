"""Scenario 3, time to task: from the caller's 201 to the task existing in the simulator.

Escalator (on SQLite, and on PostgreSQL when there is one) gets escalations at a fixed offered
rate (open loop). The driver notes the wall-clock time each 201 arrives; once the outbox is
drained, the simulator's `task.created` events are read through the twilio SDK (Events API,
`event_date_ms`: the simulator's own clock, in milliseconds, the machine's clock that the
driver shares) and matched by `escalation_id`. Time to task = event time - 201 time.

The simulator's own latency is measured in the same run, at the same rate: the driver creates
tasks directly (form POSTs with the SDK's headers) and notes each send; send -> event time is
what a create costs when nothing stands between the caller and TaskRouter. Escalator's
overhead = its time to task - that (p50 against p50, per run).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

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
    escalation_body,
    open_loop,
    post_escalation,
)
from processes import (
    Stack,
    postgres_database,
    running_stack,
    twilio_client,
    until_drained,
)

RATES = (50.0, 200.0)
_SDK_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "Accept": "application/json",
    "Accept-Charset": "utf-8",
    "Authorization": "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode(),
}


def _created_at(stack: Stack, since: float) -> dict[str, float]:
    """`task.created` event times (epoch seconds) by escalation_id, through the twilio SDK."""
    client = twilio_client(stack.simulator)
    events = client.taskrouter.v1.workspaces(stack.simulator.workspace_sid).events.list(
        event_type="task.created",
        start_date=datetime.fromtimestamp(since - 1, UTC),
        page_size=1000,
    )
    found: dict[str, float] = {}
    for event in events:
        data = event.event_data or {}
        attributes = json.loads(data.get("task_attributes") or "{}")
        key = attributes.get("escalation_id") or attributes.get("bench_id")
        if key:
            found[str(key)] = int(event.event_date_ms) / 1000
    return found


async def _escalator(ctx: Context, stack: Stack, tag: str, rate: float, seconds: float) -> Any:
    url = f"{stack.base}/escalations"
    bodies = encoded_bodies(tag, round(rate * seconds))

    async def send(n: int) -> tuple[str, str | None]:
        return await post_escalation(ctx.http, url, bodies[n])

    started = time.time()
    meter = CpuMeter({"service": [stack.service.pid], "simulator": [stack.simulator.process.pid]})
    load = await open_loop(send, rate=rate, seconds=seconds)
    drain = await until_drained(ctx.http, stack.base, within=120)
    cpu = meter.read()
    created = await asyncio.to_thread(_created_at, stack, started)
    acked = {s.value: s.done_wall for s in load.ok(("201",)) if s.value}
    delays = [created[i] - t for i, t in acked.items() if i in created]
    return {
        "acked": len(acked),
        "without_task": len(acked) - len(delays),
        "ack": summarize(s.done - s.due for s in load.sent),
        "time_to_task": summarize(delays),
        "negative": sum(1 for d in delays if d < 0),
        "drain_after_load_s": round(drain, 2),
        "cpu": cpu,
    }


async def _direct(ctx: Context, stack: Stack, tag: str, rate: float, seconds: float) -> Any:
    """Create tasks straight in the simulator: send -> task.created, and the round trip."""
    url = f"{stack.simulator.url}/v1/Workspaces/{stack.simulator.workspace_sid}/Tasks"
    forms = []
    for n in range(round(rate * seconds)):
        attributes = {**escalation_body(tag, n), "bench_id": f"{tag}-{n}"}
        forms.append(
            urlencode(
                {"Attributes": json.dumps(attributes), "WorkflowSid": stack.simulator.workflow_sid}
            ).encode()
        )
    sent_at: dict[str, float] = {}

    async def send(n: int) -> tuple[str, str | None]:
        sent_at[f"{tag}-{n}"] = time.time()
        async with ctx.http.post(url, data=forms[n], headers=_SDK_HEADERS) as answer:
            await answer.read()
            return str(answer.status), None

    started = time.time()
    load = await open_loop(send, rate=rate, seconds=seconds)
    created = await asyncio.to_thread(_created_at, stack, started)
    delays = [created[k] - t for k, t in sent_at.items() if k in created]
    return {
        "created": len(delays),
        "round_trip": summarize(s.done - s.due for s in load.sent),
        "send_to_task": summarize(delays),
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    escalator = [r["escalator"] for r in runs]
    direct = [r["direct"] for r in runs]
    return {
        "runs": runs,
        "time_to_task_p50_ms": median(e["time_to_task"]["p50_ms"] for e in escalator),
        "time_to_task_p99_ms": median(e["time_to_task"]["p99_ms"] for e in escalator),
        "simulator_p50_ms": median(d["send_to_task"]["p50_ms"] for d in direct),
        "simulator_p99_ms": median(d["send_to_task"]["p99_ms"] for d in direct),
        "overhead_p50_ms": median(r["overhead_p50_ms"] for r in runs),
        "ack_p50_ms": median(e["ack"]["p50_ms"] for e in escalator),
        "ack_p99_ms": median(e["ack"]["p99_ms"] for e in escalator),
        "without_task": sum(e["without_task"] for e in escalator),
    }


async def _measure(ctx: Context, database_url: str | None, label: str) -> dict[str, Any]:
    seconds = ctx.pick(4.0, 1.5)
    results: dict[str, Any] = {}
    async with running_stack(
        ctx.http, ctx.workdir, name=f"ttt-{label}", database_url=database_url
    ) as stack:
        await _escalator(ctx, stack, f"{label}-warmup", 50.0, 1.0)
        for rate in RATES:
            runs = []
            for index in range(ctx.runs):
                tag = f"{label}-{rate:.0f}-{index}"
                escalator = await _escalator(ctx, stack, f"e{tag}", rate, seconds)
                direct = await _direct(ctx, stack, f"d{tag}", rate, seconds)
                overhead = escalator["time_to_task"]["p50_ms"] - direct["send_to_task"]["p50_ms"]
                runs.append({"escalator": escalator, "direct": direct, "overhead_p50_ms": overhead})
                ctx.log(
                    f"  time-to-task {label} {rate:.0f}/s run {index + 1}/{ctx.runs}:"
                    f" p50 {escalator['time_to_task']['p50_ms']:.1f} ms"
                    f" p99 {escalator['time_to_task']['p99_ms']:.1f} ms;"
                    f" simulator alone p50 {direct['send_to_task']['p50_ms']:.1f} ms;"
                    f" overhead p50 {overhead:.1f} ms;"
                    f" ack p99 {escalator['ack']['p99_ms']:.1f} ms"
                )
            results[f"{rate:.0f}"] = _summary(runs)
    return results


async def run(ctx: Context) -> dict[str, Any]:
    """Both rates on SQLite, then on PostgreSQL when the run has one."""
    results = {"config": {"rates_per_second": list(RATES), "runs": ctx.runs}}
    results["sqlite"] = await _measure(ctx, None, "sqlite")
    if ctx.postgres_admin:
        async with postgres_database(ctx.postgres_admin) as url:
            results["postgresql"] = await _measure(ctx, url, "postgresql")
    return results
