"""POST /taskrouter/events: the simulator's real, signed callbacks drive escalations."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from escalator.logs import configure_logging
from escalator.simulator import CallbackFaults
from escalator.simulator.agents import WorkerPolicy
from escalator.store.schema import events
from tests.integration.conftest import Service
from tests.integration.webhooks import (
    EMAIL,
    PHONE,
    SUMMARY,
    connect,
    escalate,
    metric,
    post_signed,
    settle,
)

# The simulator's task statuses, as the status of the escalation they imply.
IMPLIED = {
    "pending": "queued",
    "reserved": "reserved",
    "assigned": "assigned",
    "wrapping": "assigned",
    "completed": "completed",
    "canceled": "canceled",
}


def _collapsed(history: list[dict[str, object]]) -> list[object]:
    statuses: list[object] = []
    for entry in history:
        if not statuses or statuses[-1] != entry["status"]:
            statuses.append(entry["status"])
    return statuses


async def _stored_events(service: Service) -> int:
    async with service.store.engine.connect() as connection:
        return int(await connection.scalar(sa.select(sa.func.count()).select_from(events)) or 0)


async def test_a_rejection_then_an_acceptance_is_told_in_order_with_both_workers(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(fmt="json", level="debug")
    try:
        await _reject_then_accept(service)
    finally:
        logging.getLogger().handlers.clear()
    ours = capsys.readouterr().err
    assert "taskrouter.event_applied" in ours
    for secret in (SUMMARY, PHONE, EMAIL, "Ada"):
        assert secret not in ours


async def _reject_then_accept(service: Service) -> None:
    await connect(service)
    escalation_id = await escalate(service, "reject-then-accept")
    await settle(service)
    ws = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    task_sid = (await service.get(escalation_id))["task_sid"]
    assert (await service.get(escalation_id))["status"] == "reserved"

    [first] = await ws.tasks(task_sid).reservations.list_async(reservation_status="pending")
    # Rejecting into Unavailable: the task is offered to someone else next.
    await (
        ws.tasks(task_sid)
        .reservations(first.sid)
        .update_async(
            reservation_status="rejected",
            worker_activity_sid=service.sim.workspace.activities["Unavailable"],
        )
    )
    await settle(service)
    [second] = await ws.tasks(task_sid).reservations.list_async(reservation_status="pending")
    assert second.worker_sid != first.worker_sid
    await ws.tasks(task_sid).reservations(second.sid).update_async(reservation_status="accepted")
    await settle(service)
    assigned = await service.get(escalation_id)
    assert assigned["status"] == "assigned"
    assert assigned["worker"]["sid"] == second.worker_sid

    await ws.tasks(task_sid).update_async(assignment_status="completed", reason="resolved")
    await settle(service)
    done = await service.get(escalation_id)
    assert _collapsed(done["history"]) == [
        "received",
        "queued",
        "reserved",
        "queued",
        "reserved",
        "assigned",
        "completed",
    ]
    offers = [
        (entry["worker_sid"], entry["outcome"])
        for entry in done["history"]
        if entry["event"] in ("reservation.rejected", "reservation.accepted")
    ]
    assert offers == [(first.worker_sid, "rejected"), (second.worker_sid, "accepted")]
    assert (done["status"], done["outcome"]) == ("completed", "completed")
    assert metric(service, "escalator_escalations_finished_total", outcome="completed") == 1
    applied = metric(
        service, "escalator_taskrouter_events_total", type="reservation.rejected", result="applied"
    )
    assert applied == 1
    async with service.store.engine.connect() as connection:
        rows = (await connection.execute(sa.select(events))).mappings().all()
    assert rows
    assert not any(SUMMARY in str(dict(row)) or PHONE in str(dict(row)) for row in rows)


@pytest.mark.virtual_clock
@pytest.mark.parametrize("count", [200])
async def test_duplicated_delayed_and_reordered_callbacks_converge_to_the_simulators_record(
    service: Service, count: int
) -> None:
    running = service.sim.running
    await connect(service)
    running.state.callbacks.set_faults(
        CallbackFaults(duplicate=0.3, delay=0.3, reorder=True, delay_seconds=0.0), seed=11
    )
    running.state.agents.default = WorkerPolicy(
        accept=0.6, reject=0.2, answer_after=1.0, complete_after=4.0
    )
    ids = [await escalate(service, f"faults-{n}", reason_code="general") for n in range(count)]
    for _ in range(40):
        await running.advance(1.0)
        await settle(service)
    ws = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    statuses: dict[str, int] = {}
    for escalation_id in ids:
        escalation = await service.get(escalation_id)
        task = await ws.tasks(escalation["task_sid"]).fetch_async()
        assert escalation["status"] == IMPLIED[task.assignment_status], escalation["history"]
        statuses[escalation["status"]] = statuses.get(escalation["status"], 0) + 1
    deliveries = running.state.callbacks.deliveries
    assert len(deliveries) > len({(d.event_sid, d.url) for d in deliveries})  # duplicates sent
    assert (
        metric(
            service,
            "escalator_taskrouter_events_total",
            type="reservation.created",
            result="duplicate",
        )
        > 0
    )
    assert len(statuses) > 1, statuses  # the run exercised more than one ending


async def test_a_bad_signature_is_refused_and_nothing_is_stored(service: Service) -> None:
    escalation_id = await escalate(service, "bad-signature")
    before = await service.get(escalation_id)
    params = {
        "EventType": "task.canceled",
        "TaskSid": before["task_sid"],
        "ResourceSid": before["task_sid"],
        "Timestamp": "1795600000",
    }
    for signature in ("not-a-signature", ""):
        response = await post_signed(service, "/taskrouter/events", params, signature=signature)
        assert response.status == 403
        assert response.content_type == "application/problem+json"
    # Signed for another URL: a proxy must not be able to replay it elsewhere.
    moved = await service.client.post(
        "/taskrouter/events?x=1",
        data=params,
        headers={"X-Twilio-Signature": "x"},
    )
    assert moved.status == 403
    assert await service.get(escalation_id) == before
    assert await _stored_events(service) == 0
    assert metric(service, "escalator_signature_failures_total", endpoint="events") == 3


async def test_a_body_without_event_type_is_malformed(service: Service) -> None:
    response = await post_signed(service, "/taskrouter/events", {"TaskSid": "WT" + "0" * 32})
    assert response.status == 400
    assert (await response.json())["status"] == 400


async def test_events_of_tasks_not_ours_and_unknown_types_are_acknowledged_and_counted(
    service: Service,
) -> None:
    foreign = {
        "EventType": "task.canceled",
        "TaskSid": "WT" + "9" * 32,
        "ResourceSid": "WT" + "9" * 32,
        "Timestamp": "2026-11-25T09:00:00Z",
        "TaskAttributes": '{"escalation_id": "esc_nobody"}',
    }
    response = await post_signed(service, "/taskrouter/events", foreign)
    assert response.status == 204
    assert response.headers["Content-Type"] == "application/json"
    unknown = await post_signed(service, "/taskrouter/events", {"EventType": "worker.created"})
    assert unknown.status == 204
    assert (
        metric(
            service, "escalator_taskrouter_events_total", type="task.canceled", result="not_ours"
        )
        == 1
    )
    assert metric(service, "escalator_taskrouter_events_total", type="other", result="unknown") == 1
    assert await _stored_events(service) == 0


async def test_a_duplicate_event_is_acknowledged_and_applied_once(service: Service) -> None:
    escalation_id = await escalate(service, "duplicate-event")
    task_sid = (await service.get(escalation_id))["task_sid"]
    params = {
        "EventType": "task.canceled",
        "TaskSid": task_sid,
        "ResourceSid": task_sid,
        "Timestamp": "1795600000",
        "TaskCanceledReason": "Task TTL Exceeded",
    }
    for _ in range(2):
        assert (await post_signed(service, "/taskrouter/events", params)).status == 204
    escalation = await service.get(escalation_id)
    assert (escalation["status"], escalation["outcome"]) == ("canceled", "ttl_expired")
    assert [e["event"] for e in escalation["history"]].count("task.canceled") == 1
    assert await _stored_events(service) == 1
    assert (
        metric(
            service, "escalator_taskrouter_events_total", type="task.canceled", result="duplicate"
        )
        == 1
    )


async def test_task_created_adopts_a_task_the_dispatcher_never_recorded(service: Service) -> None:
    await connect(service)
    response = await service.post(
        {"conversation_id": "adopt", "reason_code": "general", "summary": "Needs a person."}
    )
    escalation_id = (await response.json())["id"]
    # The voice path: TwiML <Enqueue> creates the task, not the dispatcher.
    ws = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    task = await ws.tasks.create_async(
        attributes=f'{{"escalation_id": "{escalation_id}", "channel": "chat"}}',
        workflow_sid=service.sim.workspace.workflow_sid,
    )
    await service.sim.running.state.callbacks.drain()
    adopted = await service.get(escalation_id)
    assert adopted["task_sid"] == task.sid
    assert adopted["status"] in ("queued", "reserved")
    assert "task.created" in [entry["event"] for entry in adopted["history"]]
    await settle(service)  # the dispatcher's create_task row finds the task already known
    assert len(await ws.tasks.list_async()) == 1
    assert (await service.get(escalation_id))["task_sid"] == task.sid
