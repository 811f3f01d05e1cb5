"""Watching a run settle: what is still open on both sides, and how long tasks took."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiohttp
from twilio.http.async_http_client import AsyncTwilioHttpClient

from tests.chaos.processes import API_KEY, Simulator
from tests.chaos.verify import escalation_id_of, sdk_client

__all__ = ["drain_stats", "time_to_task", "why_offline"]

_BACKLOG = re.compile(r"^escalator_outbox_backlog (\S+)$", re.MULTILINE)


async def _open_escalations(
    session: aiohttp.ClientSession, url: str, statuses: Sequence[str]
) -> int | None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    params = {"status": ",".join(statuses), "limit": "200"}
    try:
        async with session.get(f"{url}/escalations", params=params, headers=headers) as answer:
            if answer.status != 200:
                return None
            page = await answer.json()
    except (aiohttp.ClientError, TimeoutError):
        return None
    return len(page["items"]) + (1 if page.get("next_cursor") else 0)


async def _backlog(session: aiohttp.ClientSession, url: str) -> float | None:
    try:
        async with session.get(f"{url}/metrics") as answer:
            text = await answer.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    match = _BACKLOG.search(text)
    return float(match.group(1)) if match else None


async def drain_stats(
    session: aiohttp.ClientSession,
    url: str,
    simulator: Simulator,
    open_escalation_statuses: Sequence[str],
    open_task_statuses: Sequence[str],
) -> dict[str, Any]:
    """Open escalations (up to 200+), open tasks, the outbox backlog and offline workers;
    ``quiet`` when the first three are zero."""
    escalations = await _open_escalations(session, url, open_escalation_statuses)
    backlog = await _backlog(session, url)
    async with AsyncTwilioHttpClient() as http:
        workspace = sdk_client(http, simulator.url).taskrouter.v1.workspaces(
            simulator.workspace_sid
        )
        tasks = await workspace.tasks.list_async(
            assignment_status=list(open_task_statuses), page_size=1000
        )
        workers = await workspace.workers.list_async(page_size=1000)
    return {
        "quiet": escalations == 0 and not tasks and backlog == 0,
        "open_escalations": escalations,
        "open_tasks": len(tasks),
        "outbox_backlog": backlog,
        "workers_offline": sum(1 for w in workers if not w.available),
    }


async def why_offline(
    session: aiohttp.ClientSession, url: str, workspace: Any, worker: Any, since: datetime
) -> str:
    """What TaskRouter and the service know of the last reservation this worker let time out."""
    name = f"worker {worker.friendly_name} ({worker.sid}) offline"
    timeouts = await workspace.events.list_async(
        worker_sid=worker.sid, event_type="reservation.timeout", start_date=since, limit=1
    )
    if not timeouts:
        return f"{name}: no reservation.timeout in TaskRouter's events"
    event = timeouts[0]
    data = event.event_data or {}
    reservation, task_sid = event.resource_sid, data.get("task_sid")
    escalation_id = escalation_id_of(data.get("task_attributes"))
    told = "?"
    status = "?"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        async with session.get(f"{url}/escalations/{escalation_id}", headers=headers) as answer:
            if answer.status == 200:
                escalation = await answer.json()
                status = f"{escalation['status']}/{escalation.get('outcome')}"
                told = ", ".join(
                    h["event"]
                    for h in escalation.get("history", [])
                    if h.get("reservation_sid") == reservation
                )
    except (aiohttp.ClientError, TimeoutError):
        pass
    return (
        f"{name}: reservation {reservation} of task {task_sid} (escalation {escalation_id}, "
        f"{status}) timed out at {event.event_date}; the escalation's history of that "
        f"reservation: [{told or 'nothing'}]"
    )


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def time_to_task(escalations: dict[str, dict[str, Any]]) -> dict[str, float]:
    """From acknowledgement to the task's creation (or adoption): p50, p99, max, in s."""
    waits = []
    for escalation in escalations.values():
        for entry in escalation.get("history", []):
            if entry["event"] in ("task.created", "task.adopted"):
                waits.append(
                    (_moment(entry["at"]) - _moment(escalation["created_at"])).total_seconds()
                )
                break
    if not waits:
        return {}
    waits.sort()

    def at(fraction: float) -> float:
        return round(waits[min(len(waits) - 1, round(fraction * (len(waits) - 1)))], 3)

    return {"count": len(waits), "p50": at(0.5), "p99": at(0.99), "max": round(waits[-1], 3)}
