"""Reporting back over real sockets: list, cancel and the SSE stream, driven by the simulator."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from escalator.domain.changes import client_canceled
from escalator.domain.events import CANCEL_REASON
from escalator.simulator.agents import WorkerPolicy
from escalator.store.sql import open_store
from tests.integration.conftest import API_KEY, Service
from tests.integration.webhooks import body, connect, escalate, metric, settle

AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def _list(service: Service, query: str) -> Any:
    response = await service.client.get(f"/escalations?{query}", headers=AUTH)
    assert response.status == 200, await response.text()
    return await response.json()


async def _cancel(service: Service, escalation_id: str) -> Any:
    return await service.client.post(f"/escalations/{escalation_id}/cancel", headers=AUTH)


async def test_list_filters_by_conversation_and_status_and_pages_with_a_cursor(
    service: Service,
) -> None:
    ids = []
    for n in range(5):
        response = await service.post(body(f"list-{n}"))
        ids.append((await response.json())["id"])
        service.clock.advance(1)
    canceled = await _cancel(service, ids[1])
    assert canceled.status == 200
    pages, cursor = [], ""
    while True:
        page = await _list(service, f"limit=2{cursor}")
        pages.append([item["id"] for item in page["items"]])
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    received = await _list(service, "status=received&status=queued")
    assert [item["id"] for item in received["items"]] == [ids[0], *ids[2:]]
    assert [i["id"] for i in (await _list(service, "status=canceled"))["items"]] == [ids[1]]
    one = await _list(service, "conversation_id=list-3")
    assert [item["id"] for item in one["items"]] == [ids[3]]
    assert one["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=lost", "status"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("cursor=!!", "cursor"),
    ],
)
async def test_a_bad_list_query_is_422_naming_the_parameter(
    service: Service, query: str, field: str
) -> None:
    response = await service.client.get(f"/escalations?{query}", headers=AUTH)
    assert response.status == 422
    assert [error["field"] for error in (await response.json())["errors"]] == [field]


async def test_list_needs_an_api_key(service: Service) -> None:
    assert (await service.client.get("/escalations")).status == 401


async def test_cancel_before_the_task_exists_means_it_is_never_created(service: Service) -> None:
    escalation_id = (await (await service.post(body("cancel-early"))).json())["id"]
    response = await _cancel(service, escalation_id)
    assert response.status == 200
    canceled = await response.json()
    assert (canceled["status"], canceled["outcome"]) == ("canceled", "canceled_by_client")
    await settle(service)
    ws = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    assert await ws.tasks.list_async() == []
    assert (await service.get(escalation_id))["task_sid"] is None
    assert await service.store.outbox_backlog() == 0
    assert (
        metric(
            service,
            "escalator_escalation_outcomes_total",
            reason="billing_dispute",
            outcome="canceled_by_client",
        )
        == 1
    )


async def test_cancel_of_a_task_waits_for_taskrouter_then_is_canceled(service: Service) -> None:
    await connect(service)
    escalation_id = await escalate(service, "cancel-queued")
    task_sid = (await service.get(escalation_id))["task_sid"]
    assert task_sid
    response = await _cancel(service, escalation_id)
    assert response.status == 200
    waiting = await response.json()
    # A task exists: only TaskRouter's cancel makes the escalation `canceled`.
    assert waiting["status"] in ("queued", "reserved")  # a worker may have been offered it
    assert (waiting["outcome"], waiting["cancel_requested"]) == (None, True)
    assert waiting["history"][-1]["event"] == "escalation.cancel_requested"
    again = await _cancel(service, escalation_id)
    assert again.status == 200
    events = [entry["event"] for entry in (await again.json())["history"]]
    assert events.count("escalation.cancel_requested") == 1
    await settle(service)
    ws = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    task = await ws.tasks(task_sid).fetch_async()
    assert (task.assignment_status, task.reason) == ("canceled", CANCEL_REASON)
    done = await service.get(escalation_id)
    assert (done["status"], done["outcome"], done["cancel_requested"]) == (
        "canceled",
        "canceled_by_client",
        False,
    )
    assert "task.canceled" in [entry["event"] for entry in done["history"]]
    assert metric(service, "escalator_task_cancels_total", result="done") == 1
    assert (
        metric(service, "escalator_escalations_finished_total", outcome="canceled_by_client") == 1
    )


@pytest.mark.virtual_clock
async def test_a_cancel_that_loses_the_race_with_an_acceptance_follows_the_task(
    service: Service,
) -> None:
    """TaskRouter cancels a task only until a worker accepts it: when one accepts between the
    client's cancel and TaskRouter's, the escalation is not `canceled` but follows its task."""
    await connect(service)
    escalation_id = await escalate(service, "cancel-loses-race")
    await settle(service)
    task_sid = (await service.get(escalation_id))["task_sid"]
    ws = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    [offer] = await ws.tasks(task_sid).reservations.list_async(reservation_status="pending")
    assert (await service.get(escalation_id))["status"] == "reserved"
    waiting = await (await _cancel(service, escalation_id)).json()
    assert (waiting["status"], waiting["cancel_requested"]) == ("reserved", True)
    # The worker accepts before escalator's cancel reaches TaskRouter, and escalator has not
    # heard of it yet (the callback is still on its way).
    await ws.update_async(event_callback_url="")
    await ws.tasks(task_sid).reservations(offer.sid).update_async(reservation_status="accepted")
    await connect(service)
    await service.dispatcher.run_once()
    refused = await service.get(escalation_id)
    assert (refused["status"], refused["outcome"], refused["cancel_requested"]) == (
        "reserved",
        None,
        False,
    )
    assert [entry["event"] for entry in refused["history"]][-2:] == [
        "escalation.cancel_requested",
        "task.cancel_not_applied",
    ]
    assert (await ws.tasks(task_sid).fetch_async()).assignment_status == "assigned"
    assert metric(service, "escalator_task_cancels_total", result="not_applied") == 1
    # The task goes on, and so does the escalation: completed by the worker who took it.
    await ws.tasks(task_sid).update_async(assignment_status="completed", reason="resolved")
    await settle(service)
    done = await service.get(escalation_id)
    assert (done["status"], done["outcome"]) == ("completed", "completed")


async def test_a_cancel_an_earlier_version_made_final_at_once_still_cancels_the_task(
    service: Service,
) -> None:
    """Before cancels waited for TaskRouter, an escalation with a task was `canceled` at once and
    its task's cancel owed: a row left by that version, during a rolling upgrade, is carried out."""
    escalation_id = await escalate(service, "cancel-from-an-earlier-version")
    task_sid = (await service.get(escalation_id))["task_sid"]
    result = await service.store.cancel_escalation(
        escalation_id,
        now=service.clock(),
        cancel=lambda e, _task_may_exist: client_canceled(e, now=e.updated_at),
    )
    assert result is not None
    assert result[1].status.value == "canceled"
    await settle(service)
    ws = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    task = await ws.tasks(task_sid).fetch_async()
    assert (task.assignment_status, task.reason) == ("canceled", CANCEL_REASON)
    assert metric(service, "escalator_task_cancels_total", result="done") == 1


async def test_cancel_of_an_ended_or_unknown_escalation_is_refused(service: Service) -> None:
    escalation_id = (await (await service.post(body("cancel-twice"))).json())["id"]
    assert (await _cancel(service, escalation_id)).status == 200
    again = await _cancel(service, escalation_id)
    assert again.status == 409
    assert again.content_type == "application/problem+json"
    assert "already ended" in (await again.json())["detail"]
    assert (await _cancel(service, "esc_nope")).status == 404


async def _read_events(response: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "data" in current:
                events.append(current)
            current = {}
        elif line.startswith(":"):
            current.setdefault("comments", 0)
        else:
            key, _, value = line.partition(": ")
            current[key] = json.loads(value) if key == "data" else value
    return events


@pytest.mark.virtual_clock
async def test_a_stream_shows_each_change_in_order_and_ends_at_terminal(
    service: Service,
) -> None:
    running = service.sim.running
    await connect(service)
    running.state.agents.default = WorkerPolicy(accept=1.0, answer_after=1.0, complete_after=2.0)
    escalation_id = (await (await service.post(body("streamed"))).json())["id"]
    response = await service.client.get(f"/escalations/{escalation_id}/stream", headers=AUTH)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    reader = asyncio.create_task(_read_events(response))
    await service.dispatcher.run_once()
    for _ in range(6):
        await settle(service)
        await running.advance(1.0)
    await settle(service)
    events = await asyncio.wait_for(reader, 10)
    assert [event["data"]["status"] for event in events] == [
        "received",
        "queued",
        "reserved",
        "assigned",
        "completed",
    ]
    ids = [int(event["id"]) for event in events]
    assert ids == sorted(ids)
    assert events[-1]["data"]["outcome"] == "completed"
    assert events[3]["data"]["worker"]["sid"].startswith("WK")

    # Resuming after the 'reserved' event replays only what came after it.
    resumed = await service.client.get(
        f"/escalations/{escalation_id}/stream",
        headers={**AUTH, "Last-Event-ID": events[2]["id"]},
    )
    again = await asyncio.wait_for(_read_events(resumed), 5)
    assert [event["data"]["status"] for event in again] == ["assigned", "completed"]


async def test_a_stream_hears_heartbeats_and_polls_what_it_was_not_told(
    service_factory: Any, sqlite_url: str
) -> None:
    service = await service_factory(stream_heartbeat_seconds=0.2, stream_poll_seconds=0.1)
    escalation_id = (await (await service.post(body("heartbeat"))).json())["id"]
    response = await service.client.get(f"/escalations/{escalation_id}/stream", headers=AUTH)
    first = await response.content.readuntil(b"\n\n")
    assert b'"status":"received"' in first
    assert await asyncio.wait_for(response.content.readuntil(b"\n\n"), 2) == b": heartbeat\n\n"
    # Another replica's write: this process's feed is not told, the poll finds it.
    other = await open_store(sqlite_url)
    try:
        canceled = await other.cancel_escalation(
            escalation_id,
            now=service.clock(),
            cancel=lambda e, _task_may_exist: client_canceled(e, now=e.updated_at),
        )
        assert canceled is not None
    finally:
        await other.close()
    rest = await asyncio.wait_for(_read_events(response), 3)
    assert [event["data"]["status"] for event in rest] == ["canceled"]


async def test_streams_are_bounded_and_unknown_ids_are_404(service_factory: Any) -> None:
    service = await service_factory(max_streams=1, stream_poll_seconds=0.1)
    escalation_id = (await (await service.post(body("bounded"))).json())["id"]
    first = await service.client.get(f"/escalations/{escalation_id}/stream", headers=AUTH)
    await first.content.readuntil(b"\n\n")
    second = await service.client.get(f"/escalations/{escalation_id}/stream", headers=AUTH)
    assert second.status == 503
    assert second.headers["Retry-After"] == "5"
    unknown = await service.client.get("/escalations/esc_nope/stream", headers=AUTH)
    assert unknown.status == 404
    first.close()
    # The stream notices the client left at its next poll, and frees its place.
    for _ in range(100):
        if metric(service, "escalator_streams_open") == 0:
            break
        await asyncio.sleep(0.05)
    assert metric(service, "escalator_streams_open") == 0
