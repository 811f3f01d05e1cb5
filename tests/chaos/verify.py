"""The verdict: TaskRouter's record (the simulator, read through the twilio SDK) against the
escalations the service holds and the ones the agents were told about.

Counted, each with the evidence to chase it:

- **lost**: an acknowledged escalation the service does not hold; or any escalation the service
  holds with no task at all, unless its client canceled it before a task existed (no permanent
  TaskRouter error is injected, so ``failed`` counts as lost too).
- **duplicated**: every task beyond the first for one escalation; every task whose
  ``escalation_id`` the service does not know (or that carries none); every extra escalation id
  answered for one ``Idempotency-Key``.
- **mismatched**: an escalation whose status disagrees with its task's final state (mapping
  below); one that names a task TaskRouter never had; a task left routing for an escalation
  that ended before adopting it; a task that exists for an open escalation but was not adopted.

Task state (``assignmentStatus``, or for a task TaskRouter already deleted, its last
``task.completed`` / ``task.canceled`` event) to escalation status and outcome:
pending → queued · reserved → reserved · assigned, wrapping → assigned · completed → completed
(outcome completed) · canceled → canceled, outcome by the cancel reason ("Task TTL Exceeded" →
ttl_expired, "Workflow Timeout" → workflow_timeout, escalator's own reason → canceled_by_client;
any reason when the client canceled first) · deleted without either event → canceled
(task_deleted). No exception: a client's cancel makes an escalation ``canceled`` only once
TaskRouter canceled its task (or no task can exist), so a cancel that lost the race with a
worker's acceptance (``task.cancel_not_applied``) leaves the escalation following its task,
and it is checked like any other.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from tests.chaos.processes import ACCOUNT_SID, API_KEY, AUTH_TOKEN

__all__ = [
    "SimTask",
    "Verdict",
    "escalation_id_of",
    "read_escalations",
    "read_simulator",
    "sdk_client",
    "verdict",
]

CLIENT_CANCEL_REASON = "escalator: canceled by client"
TASK_TO_STATUS = {
    "pending": "queued",
    "reserved": "reserved",
    "assigned": "assigned",
    "wrapping": "assigned",
    "completed": "completed",
    "canceled": "canceled",
    "deleted": "canceled",
}
OPEN_TASK_STATUSES = ("pending", "reserved", "assigned", "wrapping")
OPEN_ESCALATION_STATUSES = ("received", "queued", "reserved", "assigned")


@dataclass
class SimTask:
    """One task as TaskRouter's record shows it at the end."""

    sid: str
    escalation_id: str | None
    status: str
    reason: str | None
    live: bool


def escalation_id_of(attributes: object) -> str | None:
    """The ``escalation_id`` in a task's attributes (JSON text), or None."""
    try:
        decoded = json.loads(attributes) if isinstance(attributes, str) else None
    except ValueError:
        return None
    value = decoded.get("escalation_id") if isinstance(decoded, dict) else None
    return value if isinstance(value, str) else None


def sdk_client(http: AsyncTwilioHttpClient, simulator_url: str) -> Client:
    """A twilio SDK client whose TaskRouter base URL is the simulator."""
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http, environment={})
    client.taskrouter.base_url = simulator_url
    return client


async def read_simulator(
    simulator_url: str, workspace_sid: str, since: datetime
) -> dict[str, SimTask]:
    """Every task of the run: the live ones from the Tasks API, and the ones TaskRouter has
    already deleted (about 5 minutes after they ended) from the Events API."""
    async with AsyncTwilioHttpClient() as http:
        workspace = sdk_client(http, simulator_url).taskrouter.v1.workspaces(workspace_sid)
        live = await workspace.tasks.list_async(page_size=1000)
        events: dict[str, list[Any]] = {}
        for kind in ("task.created", "task.completed", "task.canceled", "task.deleted"):
            events[kind] = await workspace.events.list_async(
                event_type=kind, start_date=since, page_size=1000
            )
    tasks = {
        task.sid: SimTask(
            task.sid, escalation_id_of(task.attributes), task.assignment_status, task.reason, True
        )
        for task in live
    }
    ended: dict[str, tuple[str, str | None]] = {}
    for kind, status in (("task.canceled", "canceled"), ("task.completed", "completed")):
        for event in events[kind]:
            data = event.event_data or {}
            ended[event.resource_sid] = (status, data.get("task_canceled_reason"))
    for event in events["task.created"]:
        if event.resource_sid in tasks:
            continue
        data = event.event_data or {}
        status, reason = ended.get(event.resource_sid, ("deleted", None))
        tasks[event.resource_sid] = SimTask(
            event.resource_sid, escalation_id_of(data.get("task_attributes")), status, reason, False
        )
    return tasks


async def read_escalations(
    session: aiohttp.ClientSession, base_url: str, extra_ids: set[str]
) -> dict[str, dict[str, Any]]:
    """Every escalation the service holds (``GET /escalations``, all pages), and any of
    ``extra_ids`` the listing missed, read one by one (a 404 leaves it out)."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
        async with session.get(f"{base_url}/escalations", params=params, headers=headers) as r:
            r.raise_for_status()
            page = await r.json()
        for item in page["items"]:
            found[item["id"]] = item
        cursor = page.get("next_cursor")
        if not cursor:
            break
    for escalation_id in extra_ids - set(found):
        async with session.get(f"{base_url}/escalations/{escalation_id}", headers=headers) as r:
            if r.status == 200:
                found[escalation_id] = await r.json()
    return found


@dataclass
class Verdict:
    """The three counts, the evidence behind each, and what was seen along the way."""

    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)
    escalation_statuses: Counter[str] = field(default_factory=Counter)
    task_statuses: Counter[str] = field(default_factory=Counter)

    @property
    def line(self) -> str:
        return (
            f"lost={len(self.lost)} duplicated={len(self.duplicated)} "
            f"mismatched={len(self.mismatched)}"
        )


def _expected_outcome(task: SimTask) -> str | None:
    if task.status == "completed":
        return "completed"
    if task.status == "deleted":
        return "task_deleted"
    if task.status != "canceled":
        return None
    reason = (task.reason or "").lower()
    if CLIENT_CANCEL_REASON in reason:
        return "canceled_by_client"
    if "ttl" in reason:
        return "ttl_expired"
    if "workflow" in reason:
        return "workflow_timeout"
    return None


def _describe(escalation: dict[str, Any], tasks: list[SimTask]) -> str:
    history = " > ".join(
        f"{h['event']}:{h['status']}" + (f"({h['outcome']})" if h.get("outcome") else "")
        for h in escalation.get("history", [])
    )
    shown = ", ".join(f"{t.sid}={t.status}" + (f"[{t.reason}]" if t.reason else "") for t in tasks)
    return (
        f"{escalation['id']} status={escalation['status']} outcome={escalation.get('outcome')} "
        f"task_sid={escalation.get('task_sid')} tasks=[{shown}] history: {history}"
    )


def _check_adopted(
    escalation: dict[str, Any], own: SimTask | None, tasks: list[SimTask], verdict: Verdict
) -> None:
    """An escalation that names its task: that task exists, is its only one, and agrees."""
    if own is None:
        verdict.mismatched.append(
            "names a task TaskRouter never had: " + _describe(escalation, tasks)
        )
        return
    for _other in (task for task in tasks if task.sid != own.sid):
        verdict.duplicated.append("second task: " + _describe(escalation, tasks))
    if own.escalation_id != escalation["id"]:
        verdict.mismatched.append(
            f"adopted task {own.sid} of escalation {own.escalation_id}: "
            + _describe(escalation, tasks)
        )
        return
    expected_status = TASK_TO_STATUS.get(own.status)
    events = {h["event"] for h in escalation.get("history", [])}
    client_canceled = escalation.get("outcome") == "canceled_by_client"
    if "task.cancel_not_applied" in events:
        verdict.notes["client cancel refused by TaskRouter (a worker accepted first)"] += 1
    if escalation["status"] != expected_status:
        verdict.mismatched.append(
            f"status {escalation['status']} but task {own.status}: " + _describe(escalation, tasks)
        )
        return
    expected_outcome = _expected_outcome(own)
    if expected_status == "canceled" and client_canceled:
        return  # the client's cancel came first; TaskRouter's reason may be its own
    if expected_outcome is not None and escalation.get("outcome") != expected_outcome:
        verdict.mismatched.append(
            f"outcome {escalation.get('outcome')} but task {own.status} ({own.reason}): "
            + _describe(escalation, tasks)
        )


def _check_unadopted(escalation: dict[str, Any], tasks: list[SimTask], verdict: Verdict) -> None:
    """An escalation without a task: only when its client canceled it before one existed;
    a task made meanwhile must have been canceled (it is not the escalation's own)."""
    canceled_first = (
        escalation["status"] == "canceled" and escalation.get("outcome") == "canceled_by_client"
    )
    if not tasks:
        if canceled_first:
            verdict.notes["canceled before any task existed"] += 1
        else:
            verdict.lost.append("no task: " + _describe(escalation, tasks))
        return
    if escalation["status"] in OPEN_ESCALATION_STATUSES:
        verdict.mismatched.append(
            "task exists but was not adopted: " + _describe(escalation, tasks)
        )
        return
    verdict.notes["task made after its escalation ended (then canceled)"] += 1
    for _extra in range(len(tasks) - 1):
        verdict.duplicated.append("second task after the end: " + _describe(escalation, tasks))
    if any(task.status not in ("canceled", "deleted") for task in tasks):
        verdict.mismatched.append(
            "task of an ended escalation left routing: " + _describe(escalation, tasks)
        )


def verdict(
    *,
    acknowledged: set[str],
    escalations: dict[str, dict[str, Any]],
    tasks: dict[str, SimTask],
    key_violations: dict[str, set[str]],
) -> Verdict:
    """Compare; see the module docstring for what each count means."""
    result = Verdict()
    by_escalation: dict[str, list[SimTask]] = defaultdict(list)
    for task in tasks.values():
        result.task_statuses[task.status] += 1
        if task.escalation_id is None:
            result.duplicated.append(f"task {task.sid} ({task.status}) carries no escalation_id")
        elif task.escalation_id not in escalations:
            result.duplicated.append(
                f"task {task.sid} ({task.status}) names escalation {task.escalation_id}, "
                "which the service does not hold"
            )
        else:
            by_escalation[task.escalation_id].append(task)
    for escalation_id in sorted(acknowledged - set(escalations)):
        result.lost.append(f"{escalation_id}: acknowledged, but the service does not hold it")
    for key, ids in sorted(key_violations.items()):
        for _extra in range(len(ids) - 1):
            result.duplicated.append(f"Idempotency-Key {key} answered with {sorted(ids)}")
    for escalation_id, escalation in escalations.items():
        result.escalation_statuses[f"{escalation['status']}/{escalation.get('outcome')}"] += 1
        if escalation_id not in acknowledged:
            result.notes["held but never acknowledged (the answer was lost; checked too)"] += 1
        own_tasks = sorted(by_escalation.get(escalation_id, []), key=lambda t: t.sid)
        task_sid = escalation.get("task_sid")
        if task_sid:
            _check_adopted(escalation, tasks.get(task_sid), own_tasks, result)
        else:
            _check_unadopted(escalation, own_tasks, result)
    return result
