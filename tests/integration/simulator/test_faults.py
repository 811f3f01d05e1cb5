"""Fault injection through the in-process API and the HTTP control API."""

from __future__ import annotations

import time

import aiohttp
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from escalator.simulator import Fault, RunningSimulator


async def test_http_fault_answers_503_twice_then_creates(
    client: Client, simulator: RunningSimulator
) -> None:
    fault = {"operation": "workspaces.create", "status": 503, "times": 2, "code": 20503}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{simulator.url}/_simulator/faults", json=fault) as response,
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
            body = await response.json()
            assert response.status == 429
            assert response.headers["Retry-After"] == "1"
            assert body["code"] == 20429
            assert body["more_info"] == "https://www.twilio.com/docs/errors/20429"
        async with session.get(f"{simulator.url}/v1/Workspaces") as response:
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
        async with session.get(f"{simulator.url}/_simulator/faults") as response:
            assert len((await response.json())["faults"]) == 1
        async with session.delete(f"{simulator.url}/_simulator/faults") as response:
            assert response.status == 204
        latency = {"operation": "workspaces.create", "status": None, "latency": 0.2}
        async with session.post(f"{simulator.url}/_simulator/faults", json=latency) as response:
            assert response.status == 201
        async with session.post(f"{simulator.url}/_simulator/faults", json={"status": 1}) as bad:
            assert bad.status == 400
    started = time.monotonic()
    created = await client.taskrouter.v1.workspaces.create_async(friendly_name="Slow")
    assert time.monotonic() - started >= 0.2
    assert created.sid in simulator.state.workspaces
