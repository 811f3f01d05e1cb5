"""Fault injection through the in-process API and the HTTP control API."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from escalator.simulator import Fault, FaultInjector, RunningSimulator, start_simulator
from tests.integration.simulator.conftest import CreateTask, Provisioned, _client_for, conforming


async def test_http_fault_answers_503_twice_then_creates(
    client: Client, simulator: RunningSimulator
) -> None:
    fault = {"operation": "workspaces.create", "status": 503, "times": 2, "code": 20503}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{simulator.url}/_sim/faults", json=fault) as response,
    ):
        assert response.status == 201
    workspaces = client.taskrouter.v1.workspaces
    for _ in range(2):
        with pytest.raises(TwilioRestException) as raised:
            await workspaces.create_async(friendly_name="Flaky")
        assert (raised.value.status, raised.value.code) == (503, 20503)
    assert simulator.state.workspaces == {}
    created = await workspaces.create_async(friendly_name="Flaky")
    assert [w.sid for w in await workspaces.list_async()] == [created.sid]


async def test_429_carries_retry_after_and_code_20429(
    simulator: RunningSimulator, credentials: tuple[str, str]
) -> None:
    simulator.state.faults.add(Fault("workspaces.list", status=429, retry_after=1))
    auth = {"Authorization": aiohttp.encode_basic_auth(*credentials)}
    async with aiohttp.ClientSession(headers=auth) as session:
        async with session.get(f"{simulator.url}/v1/Workspaces") as response:
            body = await (await conforming(response)).json()
            assert response.status == 429
            assert response.headers["Retry-After"] == "1"
            assert body["code"] == 20429
            assert body["more_info"] == "https://www.twilio.com/docs/errors/20429"
        async with session.get(f"{simulator.url}/v1/Workspaces") as response:
            await conforming(response)
            assert response.status == 200


async def test_429_then_success_through_the_sdk(
    client: Client, simulator: RunningSimulator
) -> None:
    workspace = await client.taskrouter.v1.workspaces.create_async(friendly_name="W")
    simulator.state.faults.add(Fault("workspaces.fetch", status=429, retry_after=1))
    with pytest.raises(TwilioRestException) as raised:
        await client.taskrouter.v1.workspaces(workspace.sid).fetch_async()
    assert (raised.value.status, raised.value.code) == (429, 20429)
    fetched = await client.taskrouter.v1.workspaces(workspace.sid).fetch_async()
    assert fetched.sid == workspace.sid


async def test_clearing_faults_and_latency(client: Client, simulator: RunningSimulator) -> None:
    simulator.state.faults.add(Fault("*", status=500, times=None))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{simulator.url}/_sim/faults") as response:
            assert len((await response.json())["faults"]) == 1
        async with session.delete(f"{simulator.url}/_sim/faults") as response:
            assert response.status == 204
        latency = {"operation": "workspaces.create", "status": None, "latency": 0.2}
        async with session.post(f"{simulator.url}/_sim/faults", json=latency) as response:
            assert response.status == 201
        async with session.post(f"{simulator.url}/_sim/faults", json={"status": 1}) as bad:
            assert bad.status == 400
    started = time.monotonic()
    created = await client.taskrouter.v1.workspaces.create_async(friendly_name="Slow")
    assert time.monotonic() - started >= 0.2
    assert created.sid in simulator.state.workspaces


async def _statuses(client: Client, count: int) -> list[int]:
    """Create `count` workspaces through the SDK; the HTTP status of each attempt."""
    statuses = []
    for n in range(count):
        try:
            await client.taskrouter.v1.workspaces.create_async(friendly_name=f"W{n}")
        except TwilioRestException as error:
            statuses.append(error.status)
        else:
            statuses.append(201)
    return statuses


async def test_seeded_error_rates_give_the_same_sequence_twice(
    credentials: tuple[str, str],
) -> None:
    sequences = []
    for seed in (42, 42, 43):
        async with await start_simulator(
            account_sid=credentials[0], auth_token=credentials[1], seed=seed
        ) as sim:
            sim.state.faults.add(
                Fault("workspaces.create", status=503, probability=0.3, times=None)
            )
            sim.state.faults.add(
                Fault("workspaces.create", status=500, probability=0.2, times=None)
            )
            client = _client_for(sim, *credentials)
            try:
                sequences.append(await _statuses(client, 40))
            finally:
                await client.http_client.close()
            assert len(sim.state.workspaces) == sequences[-1].count(201)
    assert sequences[0] == sequences[1]
    assert {500, 503, 201} <= set(sequences[0])
    assert sequences[2] != sequences[0]


async def test_error_rate_over_http_control_api(
    client: Client, simulator: RunningSimulator
) -> None:
    rate = {"operation": "workspaces.create", "status": 500, "probability": 0.5, "times": None}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{simulator.url}/_sim/faults", json=rate) as response,
    ):
        assert response.status == 201
        assert (await response.json())["probability"] == 0.5
    statuses = await _statuses(client, 40)
    assert 5 < statuses.count(500) < 35
    assert set(statuses) == {201, 500}


async def test_latency_applies_with_a_one_shot_error(
    client: Client, simulator: RunningSimulator
) -> None:
    simulator.state.faults.add(Fault("workspaces.create", status=None, latency=0.1, times=None))
    simulator.state.faults.add(Fault("workspaces.create", status=503))
    for expected in (503, 201):
        started = time.monotonic()
        assert await _statuses(client, 1) == [expected]
        assert time.monotonic() - started >= 0.1
    assert len(simulator.state.faults.active) == 1


def test_latency_range_is_drawn_uniformly_from_the_seed() -> None:
    def draws(seed: int) -> list[float]:
        injector = FaultInjector()
        injector.seed(seed)
        injector.add(Fault("tasks.create", status=None, latency=0.1, latency_max=0.3, times=None))
        return [injector.plan("tasks.create").latency for _ in range(50)]

    first = draws(7)
    assert first == draws(7)
    assert all(0.1 <= latency <= 0.3 for latency in first)
    assert len(set(first)) == 50
    assert FaultInjector().plan("tasks.create").latency == 0


async def test_reset_after_create_leaves_one_task_the_client_never_saw(
    client: Client,
    simulator: RunningSimulator,
    provisioned: Provisioned,
    create_task: CreateTask,
) -> None:
    reset = {"operation": "tasks.create", "ambiguous": "reset"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{simulator.url}/_sim/faults", json=reset) as response,
    ):
        assert (await response.json())["status"] is None
    with pytest.raises(aiohttp.ClientError):
        await create_task({"escalation_id": "e1"})
    tasks = list(simulator.state.workspaces[provisioned.workspace.sid].tasks.values())
    assert [json.loads(t.attributes) for t in tasks] == [{"escalation_id": "e1"}]
    # The client can look it up, and the next create is answered normally.
    ws = client.taskrouter.v1.workspaces(provisioned.workspace.sid)
    found = await ws.tasks.list_async(evaluate_task_attributes="escalation_id == 'e1'")
    assert [t.sid for t in found] == [tasks[0].sid]
    second = await create_task({"escalation_id": "e2"})
    assert second.sid in simulator.state.workspaces[provisioned.workspace.sid].tasks


async def test_hang_past_the_client_timeout_leaves_one_task(
    simulator: RunningSimulator, provisioned: Provisioned, create_task: CreateTask
) -> None:
    simulator.state.faults.add(Fault("tasks.create", ambiguous="hang", hang=30))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await create_task({"escalation_id": "e1"})
    tasks = simulator.state.workspaces[provisioned.workspace.sid].tasks
    assert [json.loads(t.attributes) for t in tasks.values()] == [{"escalation_id": "e1"}]
    # The held answer is dropped once the client is gone: closing does not wait 30 s.
    await simulator.close()
    assert time.monotonic() - started < 5


async def test_short_hang_answers_late(
    simulator: RunningSimulator, provisioned: Provisioned, create_task: CreateTask
) -> None:
    simulator.state.faults.add(Fault("tasks.create", ambiguous="hang", hang=0.3, times=2))
    started = time.monotonic()
    task = await create_task({"escalation_id": "e1"})
    assert time.monotonic() - started >= 0.3
    assert task.sid in simulator.state.workspaces[provisioned.workspace.sid].tasks


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"operation": "tasks.create", "ambiguous": "reset", "status": 500}, "no 'status'"),
        ({"operation": "tasks.create", "ambiguous": "hang"}, "'hang' seconds"),
        ({"operation": "tasks.create", "ambiguous": "drop"}, "'ambiguous' must be one of"),
        ({"operation": "tasks.create", "probability": 1.5}, "'probability'"),
        ({"operation": "tasks.create", "latency": 0.5, "latency_max": 0.1}, "'latency_max'"),
    ],
)
async def test_control_api_refuses_contradictory_faults(
    simulator: RunningSimulator, body: dict[str, object], message: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{simulator.url}/_sim/faults", json=body) as response,
    ):
        assert response.status == 400
        assert message in (await response.json())["error"]
    assert simulator.state.faults.active == ()
