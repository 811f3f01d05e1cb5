"""Event and assignment callbacks on a real socket, validated with the SDK's RequestValidator."""

from __future__ import annotations

import json

import aiohttp
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from escalator.simulator import CONTROL_PREFIX, RunningSimulator, start_simulator
from tests.integration.simulator.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    Receiver,
    World,
    _client_for,
)

VALIDATOR = RequestValidator(AUTH_TOKEN)


def _assert_signed(receiver: Receiver) -> None:
    assert receiver.requests
    for request in receiver.requests:
        assert VALIDATOR.validate(request.url, request.params, request.signature), request.params
        assert not VALIDATOR.validate(request.url, {**request.params, "x": "1"}, request.signature)


async def _scenario(world: World, **workflow: object) -> tuple[str, str]:
    queue = await world.queue("Q")
    flow = await world.workflow([], default=queue, reservation_timeout=30, **workflow)
    worker = await world.worker("ann", skills=["billing"])
    return flow, worker


async def test_every_event_callback_is_signed_and_carries_the_documented_fields(
    world: World, receiver: Receiver
) -> None:
    await world.ws.update_async(event_callback_url=receiver.answer("/events?site=1", 204))
    flow, worker = await _scenario(world)
    task = await world.task(flow, type="billing")
    reservation = await world.pending(task.sid)
    await (
        world.ws.tasks(task.sid)
        .reservations(reservation.sid)
        .update_async(reservation_status="accepted")
    )
    await world.ws.tasks(task.sid).update_async(assignment_status="completed", reason="done")
    await world.sim.state.callbacks.drain()
    _assert_signed(receiver)
    received = [r.params["EventType"] for r in receiver.requests]
    logged = [e.event_type for e in world.sim.state.events if e.workspace_sid == world.sid]
    assert received == logged
    assert "reservation.accepted" in received
    created = next(
        r.params for r in receiver.requests if r.params["EventType"] == "reservation.created"
    )
    for name in (
        "AccountSid",
        "WorkspaceSid",
        "WorkspaceName",
        "EventDescription",
        "ResourceType",
        "ResourceSid",
        "Timestamp",
        "TaskSid",
        "TaskAttributes",
        "TaskAge",
        "TaskPriority",
        "TaskAssignmentStatus",
        "WorkerSid",
        "WorkerName",
        "WorkerAttributes",
        "WorkerActivitySid",
        "WorkerActivityName",
        "ReservationSid",
        "TaskQueueSid",
        "TaskQueueName",
        "WorkflowSid",
        "WorkflowName",
    ):
        assert created.get(name), name
    assert (created["ResourceSid"], created["WorkerSid"]) == (reservation.sid, worker)
    assert int(created["Timestamp"]) == int(world.sim.clock.now().timestamp())


async def test_events_filter_limits_the_callbacks(world: World, receiver: Receiver) -> None:
    await world.ws.update_async(
        event_callback_url=receiver.answer("/events"), events_filter="task.created,task.canceled"
    )
    flow, _ = await _scenario(world)
    task = await world.task(flow)
    await world.ws.tasks(task.sid).update_async(assignment_status="canceled", reason="gone")
    await world.sim.state.callbacks.drain()
    assert [r.params["EventType"] for r in receiver.requests] == ["task.created", "task.canceled"]


async def test_assignment_callback_accept_instruction_accepts(
    world: World, receiver: Receiver
) -> None:
    url = receiver.answer("/assign", 200, json.dumps({"instruction": "accept"}))
    flow, worker = await _scenario(world, assignment_callback_url=url)
    task = await world.task(flow, type="billing")
    await world.sim.state.callbacks.drain()
    _assert_signed(receiver)
    [callback] = receiver.at("/assign")
    reservation = world.sim.state.events.of_type("reservation.created", TaskSid=task.sid)[0]
    assert callback.params["ReservationSid"] == reservation.get("ReservationSid")
    assert callback.params["WorkerSid"] == worker
    assert json.loads(callback.params["TaskAttributes"]) == {"type": "billing"}
    for name in ("AccountSid", "WorkspaceSid", "WorkflowSid", "TaskQueueSid", "TaskAge"):
        assert callback.params[name]
    assert (await world.fetch(task.sid)).assignment_status == "assigned"


async def test_assignment_callback_reject_moves_the_worker(
    world: World, receiver: Receiver
) -> None:
    busy = world.activities["Unavailable"]
    url = receiver.answer(
        "/assign", 200, json.dumps({"instruction": "reject", "activity_sid": busy})
    )
    flow, worker = await _scenario(world, assignment_callback_url=url)
    task = await world.task(flow)
    await world.sim.state.callbacks.drain()
    assert (await world.fetch(task.sid)).assignment_status == "pending"
    assert (await world.ws.workers(worker).fetch_async()).activity_sid == busy
    assert "reservation.rejected" in world.types(TaskSid=task.sid)


async def test_empty_200_leaves_the_decision_to_rest(world: World, receiver: Receiver) -> None:
    flow, _ = await _scenario(world, assignment_callback_url=receiver.answer("/assign", 200, ""))
    task = await world.task(flow)
    await world.sim.state.callbacks.drain()
    assert len(receiver.at("/assign")) == 1
    assert (await world.pending(task.sid)).reservation_status == "pending"


async def test_slow_assignment_callback_falls_back(world: World, receiver: Receiver) -> None:
    world.sim.state.callbacks.assignment_timeout = 0.2
    slow = receiver.answer("/slow", 200, json.dumps({"instruction": "reject"}), delay=1.0)
    fallback = receiver.answer("/fallback", 200, json.dumps({"instruction": "accept"}))
    flow, _ = await _scenario(
        world, assignment_callback_url=slow, fallback_assignment_callback_url=fallback
    )
    task = await world.task(flow)
    await world.sim.state.callbacks.drain()
    outcomes = [(d.url, d.outcome) for d in world.sim.state.callbacks.deliveries]
    assert outcomes == [(slow, "timeout"), (fallback, "delivered")]
    assert (await world.fetch(task.sid)).assignment_status == "assigned"
    _assert_signed(receiver)


async def _faulty_run(receiver: Receiver, seed: int) -> tuple[list[str], list[str], list[str]]:
    sim = await start_simulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, virtual_clock=True, seed=seed
    )
    client: Client = _client_for(sim, ACCOUNT_SID, AUTH_TOKEN)
    receiver.requests.clear()
    try:
        faults = {"drop": 0.2, "duplicate": 0.2, "delay": 0.3, "reorder": True}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{sim.url}{CONTROL_PREFIX}/callbacks/faults", json=faults) as answer,
        ):
            assert answer.status == 200
        world = await World.create(client, sim, event_callback_url=receiver.answer("/events"))
        flow, _ = await _scenario(world)
        for n in range(6):
            task = await world.task(flow, n=n)
            reservation = await world.pending(task.sid)
            world.sim.engine.accept(world.sid, reservation.sid)
            await world.ws.tasks(task.sid).update_async(assignment_status="completed", reason="ok")
        await sim.state.callbacks.drain()
        _assert_signed(receiver)
        # The event's position in the log identifies it across runs (SIDs are random).
        position = {e.sid: i for i, e in enumerate(sim.state.events)}
        sent = [str(position[d.event_sid or ""]) for d in sim.state.callbacks.deliveries]
        outcomes = [d.outcome for d in sim.state.callbacks.deliveries]
        got = [r.params["EventType"] for r in receiver.requests]
        return sent, outcomes, got
    finally:
        await client.http_client.close()
        await sim.close()


async def test_callback_faults_are_deterministic_under_a_seed(receiver: Receiver) -> None:
    first = await _faulty_run(receiver, seed=42)
    again = await _faulty_run(receiver, seed=42)
    other = await _faulty_run(receiver, seed=43)
    assert first == again
    assert first != other
    sent, outcomes, _ = first
    assert "dropped" in outcomes
    assert len(sent) != len(set(sent))  # duplicates
    delivered = [int(i) for i, o in zip(sent, outcomes, strict=True) if o != "dropped"]
    assert delivered != sorted(delivered)  # reordered


async def test_clock_advance_endpoint_moves_virtual_time_only(
    vsim: RunningSimulator, simulator: RunningSimulator
) -> None:
    before = vsim.clock.now()
    async with aiohttp.ClientSession() as session:
        url = f"{vsim.url}{CONTROL_PREFIX}/clock/advance"
        async with session.post(url, json={"seconds": 90}) as answer:
            assert answer.status == 200
        assert (vsim.clock.now() - before).total_seconds() == 90
        url = f"{simulator.url}{CONTROL_PREFIX}/clock/advance"
        async with session.post(url, json={"seconds": 90}) as answer:
            assert answer.status == 400
