"""Twilio's rate limits (429, code 20429) and the attribute size limit, through the real SDK."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from escalator.simulator import RunningSimulator
from tests.integration.simulator.conftest import CreateTask, Provisioned, conforming


class FakeMonotonic:
    """A monotonic clock the test moves by hand, so "within one second" is exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def monotonic(simulator: RunningSimulator) -> FakeMonotonic:
    clock = FakeMonotonic()
    simulator.state.limits.monotonic = clock
    return clock


def _tasks(simulator: RunningSimulator, provisioned: Provisioned) -> dict[str, Any]:
    return simulator.state.workspaces[provisioned.workspace.sid].tasks


async def test_429_with_code_20429_exactly_when_the_bucket_empties(
    simulator: RunningSimulator,
    provisioned: Provisioned,
    create_task: CreateTask,
    monotonic: FakeMonotonic,
) -> None:
    simulator.state.limits.configure(rate=2, burst=5)
    for n in range(5):
        await create_task({"n": n})
    with pytest.raises(TwilioRestException) as raised:
        await create_task({"n": 5})
    assert (raised.value.status, raised.value.code) == (429, 20429)
    assert len(_tasks(simulator, provisioned)) == 5  # a 429 creates nothing
    monotonic.now += 0.5  # one token at 2 per second
    await create_task({"n": 5})
    with pytest.raises(TwilioRestException):
        await create_task({"n": 6})
    monotonic.now += 10  # refills to the burst, not beyond
    for n in range(5):
        await create_task({"n": 10 + n})
    with pytest.raises(TwilioRestException):
        await create_task({"n": 99})


async def test_each_workspace_has_its_own_bucket(
    client: Client,
    simulator: RunningSimulator,
    provisioned: Provisioned,
    create_task: CreateTask,
    monotonic: FakeMonotonic,
) -> None:
    other = await client.taskrouter.v1.workspaces.create_async(friendly_name="Other")
    simulator.state.limits.configure(rate=1, burst=1)
    await create_task({"n": 1})
    with pytest.raises(TwilioRestException):
        await create_task({"n": 2})
    fetched = await client.taskrouter.v1.workspaces(other.sid).fetch_async()
    assert fetched.sid == other.sid


async def test_retry_after_is_optional_and_off_by_default(
    simulator: RunningSimulator, credentials: tuple[str, str], monotonic: FakeMonotonic
) -> None:
    # Twilio documents no Retry-After for TaskRouter; the simulator sends one only on request.
    auth = {"Authorization": aiohttp.encode_basic_auth(*credentials)}
    async with aiohttp.ClientSession(headers=auth) as session:
        for retry_after, expected in ((False, None), (True, "2")):
            simulator.state.limits.configure(rate=0.5, burst=1, retry_after=retry_after)
            async with session.get(f"{simulator.url}/v1/Workspaces") as response:
                await conforming(response)
                assert response.status == 200
            async with session.get(f"{simulator.url}/v1/Workspaces") as response:
                body = await (await conforming(response)).json()
                assert (response.status, body["code"], body["status"]) == (429, 20429, 429)
                assert body["more_info"] == "https://www.twilio.com/docs/errors/20429"
                assert response.headers.get("Retry-After") == expected


async def test_fourth_evaluate_task_attributes_list_within_one_second_is_429(
    client: Client,
    simulator: RunningSimulator,
    provisioned: Provisioned,
    create_task: CreateTask,
    monotonic: FakeMonotonic,
) -> None:
    task = await create_task({"escalation_id": "e1"})
    ws = client.taskrouter.v1.workspaces(provisioned.workspace.sid)

    async def evaluate() -> list[str]:
        found = await ws.tasks.list_async(evaluate_task_attributes="escalation_id == 'e1'")
        return [t.sid for t in found]

    for _ in range(3):
        assert await evaluate() == [task.sid]
        monotonic.now += 0.25
    with pytest.raises(TwilioException) as failed:
        await evaluate()
    response = failed.value.args[1]
    assert (response.status_code, json.loads(response.text)["code"]) == (429, 20429)
    # Plain lists are not limited, and the window slides: at 1 s after the first, one more.
    assert len(await ws.tasks.list_async()) == 1
    monotonic.now += 0.25
    assert await evaluate() == [task.sid]
    with pytest.raises(TwilioException):
        await evaluate()


async def test_evaluate_limit_is_per_workspace_and_can_be_changed_over_http(
    client: Client,
    simulator: RunningSimulator,
    provisioned: Provisioned,
    monotonic: FakeMonotonic,
) -> None:
    other = client.taskrouter.v1.workspaces(
        (await client.taskrouter.v1.workspaces.create_async(friendly_name="Other")).sid
    )
    ws = client.taskrouter.v1.workspaces(provisioned.workspace.sid)
    for _ in range(3):
        await ws.tasks.list_async(evaluate_task_attributes="1==1")
    assert await other.tasks.list_async(evaluate_task_attributes="1==1") == []
    limits = {"rate": 10, "burst": 20, "evaluate_per_second": 5}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{simulator.url}/_sim/limits", json=limits) as response:
            assert await response.json() == {**limits, "retry_after": False}
        async with session.get(f"{simulator.url}/_sim/limits") as response:
            assert (await response.json())["evaluate_per_second"] == 5
        for bad in ({"rate": 0}, {"burst": 0.5}, {"evaluate_per_second": 1.5}, {"x": 1}):
            async with session.post(f"{simulator.url}/_sim/limits", json=bad) as response:
                assert response.status == 400
    for _ in range(5):
        await ws.tasks.list_async(evaluate_task_attributes="1==1")
    with pytest.raises(TwilioException):
        await ws.tasks.list_async(evaluate_task_attributes="1==1")


async def test_defaults_are_twilio_s(simulator: RunningSimulator) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{simulator.url}/_sim/limits") as response,
    ):
        assert await response.json() == {
            "rate": None,
            "burst": None,
            "evaluate_per_second": 3,
            "retry_after": False,
        }


async def test_attributes_over_4096_characters_are_refused_on_update(
    client: Client,
    simulator: RunningSimulator,
    provisioned: Provisioned,
    create_task: CreateTask,
) -> None:
    task = await create_task({"v": 1})
    ws = client.taskrouter.v1.workspaces(provisioned.workspace.sid)
    padding = 4096 - len(json.dumps({"text": ""}))
    largest = json.dumps(
        {"text": "é" * padding}, ensure_ascii=False
    )  # characters, not bytes, are counted
    assert len(largest) == 4096
    updated = await ws.tasks(task.sid).update_async(attributes=largest)
    assert json.loads(updated.attributes)["text"] == "é" * padding
    with pytest.raises(TwilioRestException) as raised:
        await ws.tasks(task.sid).update_async(attributes=json.dumps({"text": "x" * padding + "x"}))
    assert (raised.value.status, raised.value.code) == (400, 20001)
    assert "Attributes" in raised.value.msg
    assert "4096" in raised.value.msg
    assert _tasks(simulator, provisioned)[task.sid].attributes == largest
