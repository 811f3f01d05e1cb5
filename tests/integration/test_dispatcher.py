"""The dispatcher against the simulator over HTTP: one task per escalation through 503s and 429s."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from escalator.domain.attributes import encode_attributes
from escalator.simulator import Fault
from tests.integration.conftest import Service
from tests.integration.test_api import BODY


async def _tasks(service: Service) -> list[Any]:
    workspace = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    return list(await workspace.tasks.list_async())


async def _task(service: Service, task_sid: str) -> Any:
    workspace = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    return await workspace.tasks(task_sid).fetch_async()


async def _escalate(service: Service, **changes: Any) -> str:
    response = await service.post({**BODY, **changes})
    assert response.status == 201
    return str((await response.json())["id"])


async def test_a_due_escalation_becomes_a_queued_task(service: Service) -> None:
    escalation_id = await _escalate(service)
    assert await service.dispatcher.run_once() == 1
    body = await service.get(escalation_id)
    assert body["status"] == "queued"
    task = await _task(service, body["task_sid"])
    attributes = json.loads(task.attributes)
    assert attributes["escalation_id"] == escalation_id
    assert attributes["ai_summary"] == BODY["summary"]
    assert attributes["context"] == {"order_id": "A1"}
    assert task.priority == 50
    assert task.timeout == 3600
    assert task.workflow_sid == service.sim.workspace.workflow_sid
    assert task.task_channel_unique_name == "voice"
    assert task.task_queue_sid == service.sim.workspace.task_queues["Billing"]
    assert [event["event"] for event in body["history"]] == ["escalation.received", "task.created"]
    assert await service.store.outbox_backlog() == 0
    assert await service.dispatcher.run_once() == 0


async def test_503s_are_retried_until_the_task_exists_once(service: Service) -> None:
    service.sim.running.state.faults.add(Fault("tasks.create", status=503, times=2))
    escalation_id = await _escalate(service)
    await service.dispatcher.run_once()
    body = await service.get(escalation_id)
    assert body["status"] == "queued"
    assert len(service.waits) == 2  # two backoffs inside one lease
    assert len(await _tasks(service)) == 1


async def test_a_429_retry_after_is_honoured(service: Service) -> None:
    service.sim.running.state.faults.add(Fault("tasks.create", status=429, times=1, retry_after=3))
    escalation_id = await _escalate(service)
    await service.dispatcher.run_once()
    assert service.waits == [3.0]
    assert (await service.get(escalation_id))["status"] == "queued"
    assert len(await _tasks(service)) == 1


async def test_more_failures_than_one_lease_allows_reschedule_durably(service: Service) -> None:
    service.sim.running.state.faults.add(Fault("tasks.create", status=503, times=3, retry_after=0))
    escalation_id = await _escalate(service)
    await service.dispatcher.run_once()
    body = await service.get(escalation_id)
    assert body["status"] == "received"
    assert await _tasks(service) == []
    assert await service.dispatcher.run_once() == 0  # not due yet: backing off
    service.clock.advance(120)
    assert await service.dispatcher.run_once() == 1
    assert (await service.get(escalation_id))["status"] == "queued"
    assert len(await _tasks(service)) == 1


async def test_a_task_created_before_a_crash_is_found_not_duplicated(service: Service) -> None:
    escalation_id = await _escalate(service)
    # A dispatcher leases the row, creates the task, and dies before recording it.
    [item] = await service.store.lease_outbox(
        owner="dead", now=service.clock(), lease_for=timedelta(seconds=30), limit=1
    )
    escalation = await service.store.get_escalation(item.escalation_id)
    assert escalation is not None
    created_sid = await service.taskrouter.create_task(
        attributes=encode_attributes(escalation).json,
        workflow_sid=service.sim.workspace.workflow_sid,
        priority=1,
        ttl=60,
        channel="chat",
    )
    service.clock.advance(31)  # the dead dispatcher's lease expires
    assert await service.dispatcher.run_once() == 1
    body = await service.get(escalation_id)
    assert body["task_sid"] == created_sid
    assert body["history"][-1]["event"] == "task.adopted"
    assert len(await _tasks(service)) == 1


async def test_an_ambiguous_5xx_is_followed_by_a_lookup(service: Service) -> None:
    service.sim.running.state.faults.add(Fault("tasks.create", status=502, times=1))
    service.sim.running.state.faults.add(Fault("tasks.list", status=503, times=1))
    escalation_id = await _escalate(service)
    await service.dispatcher.run_once()
    body = await service.get(escalation_id)
    assert body["status"] == "queued"
    assert len(await _tasks(service)) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault("tasks.create", status=None, ambiguous="reset"),
        Fault("tasks.create", status=None, ambiguous="hang", hang=30),
    ],
    ids=["connection-reset", "answer-never-comes"],
)
async def test_a_create_whose_answer_is_lost_is_found_not_repeated(
    service: Service, fault: Fault
) -> None:
    service.sim.running.state.faults.add(fault)
    escalation_id = await _escalate(service)
    await service.dispatcher.run_once()
    body = await service.get(escalation_id)
    assert body["status"] == "queued"
    assert body["history"][-1]["event"] == "task.adopted"
    [task] = await _tasks(service)
    assert body["task_sid"] == task.sid


async def test_a_retry_after_longer_than_the_lease_allows_gives_the_row_back(
    service: Service,
) -> None:
    service.sim.running.state.faults.add(Fault("tasks.create", status=429, times=1, retry_after=60))
    escalation_id = await _escalate(service)
    await service.dispatcher.run_once()
    # No sleeping on a lease another replica could take meanwhile: the row goes back, due
    # after Retry-After, and nothing was created.
    assert service.waits == []
    assert (await service.get(escalation_id))["status"] == "received"
    assert await _tasks(service) == []
    service.clock.advance(59)
    assert await service.dispatcher.run_once() == 0
    service.clock.advance(60)
    assert await service.dispatcher.run_once() == 1
    assert (await service.get(escalation_id))["status"] == "queued"
    assert len(await _tasks(service)) == 1


async def test_a_permanent_refusal_fails_the_escalation(service: Service) -> None:
    service.sim.running.state.faults.add(
        Fault("tasks.create", status=400, code=20001, message="Invalid Attributes")
    )
    escalation_id = await _escalate(service)
    await service.dispatcher.run_once()
    body = await service.get(escalation_id)
    assert body["status"] == "failed"
    assert body["outcome"] == "twilio_rejected"
    assert body["error"]["code"] == 20001
    assert "Invalid Attributes" in body["error"]["message"]
    assert await service.store.outbox_backlog() == 0
    assert await _tasks(service) == []


async def test_a_slow_create_holds_back_no_escalation_due_after_it(service: Service) -> None:
    faults = service.sim.running.state.faults
    faults.add(Fault("tasks.create", status=None, latency=2.0))  # the first create only
    slow = await _escalate(service, conversation_id="slow-create")
    running = asyncio.create_task(service.dispatcher.run())
    try:
        while faults.active:  # the slow create has reached TaskRouter
            await asyncio.sleep(0.01)
        quick = await _escalate(service, conversation_id="due-after-it")
        service.dispatcher.wake()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        while (await service.get(quick))["task_sid"] is None:
            assert loop.time() < deadline, "the quick escalation waited for the slow create"
            await asyncio.sleep(0.02)
        assert (await service.get(slow))["task_sid"] is None  # still being created
    finally:
        service.dispatcher.stop()
        await running
    # Stopping finishes the rows in hand.
    assert (await service.get(slow))["task_sid"] is not None
    assert len(await _tasks(service)) == 2


async def test_a_new_escalation_gets_its_task_from_the_handoff_without_a_lease(
    service: Service,
) -> None:
    service.store.hand_new_work_to(service.dispatcher)
    escalation_id = await _escalate(service)
    await service.dispatcher.settle()
    body = await service.get(escalation_id)
    assert body["status"] == "queued"
    assert len(await _tasks(service)) == 1
    assert await service.store.outbox_backlog() == 0
    assert await service.dispatcher.run_once() == 0


async def test_rows_left_unleased_go_before_new_ones_are_claimed(service: Service) -> None:
    service.store.hand_new_work_to(service.dispatcher)
    service.dispatcher.left_unleased()  # as when a burst found the hand full
    waiting = await _escalate(service, conversation_id="waiting")
    newer = await _escalate(service, conversation_id="newer")
    await service.dispatcher.settle()
    assert [(await service.get(i))["status"] for i in (waiting, newer)] == ["received"] * 2
    assert await service.dispatcher.run_once() == 2  # the lease finds both, with room to spare
    latest = await _escalate(service, conversation_id="latest")
    await service.dispatcher.settle()
    assert (await service.get(latest))["status"] == "queued"
    assert await service.dispatcher.run_once() == 0
