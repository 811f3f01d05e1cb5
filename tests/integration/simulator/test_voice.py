"""Calls queued as ``<Enqueue workflowSid><Task>`` TwiML does, and their signed queue results."""

from __future__ import annotations

import json

import aiohttp
import pytest
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Enqueue, VoiceResponse

from escalator.simulator import CONTROL_PREFIX
from escalator.simulator.voice import EnqueueError
from tests.integration.simulator.conftest import AUTH_TOKEN, Receiver, World

VALIDATOR = RequestValidator(AUTH_TOKEN)


def _twiml(workflow_sid: str, action: str | None, **task: object) -> str:
    response = VoiceResponse()
    enqueue = Enqueue(workflow_sid=workflow_sid, **({"action": action} if action else {}))
    enqueue.task(json.dumps({"escalation_id": "esc_1", "department": "billing"}), **task)
    response.append(enqueue)
    return str(response)


async def _flow(world: World, receiver: Receiver | None = None) -> str:
    queue = await world.queue("Q")
    options = {}
    if receiver is not None:
        options["assignment_callback_url"] = receiver.answer(
            "/assign", 200, json.dumps({"instruction": "dequeue", "from": "+15005550006"})
        )
    return await world.workflow([], default=queue, reservation_timeout=30, **options)


async def _result(world: World, receiver: Receiver) -> dict[str, str]:
    await world.sim.state.callbacks.drain()
    [request] = receiver.at("/queue-result")
    assert VALIDATOR.validate(request.url, request.params, request.signature)
    return request.params


async def test_an_enqueued_call_becomes_a_voice_task_with_the_twiml_priority_and_timeout(
    world: World,
) -> None:
    flow = await _flow(world)
    call = world.sim.state.calls.enqueue(_twiml(flow, None, priority=7, timeout=600))
    task = await world.fetch(call.task_sid)
    assert task.priority == 7
    assert task.timeout == 600
    assert task.task_channel_unique_name == "voice"
    attributes = json.loads(task.attributes)
    assert attributes["escalation_id"] == "esc_1"
    assert attributes["call_sid"] == call.sid


async def test_a_dequeue_instruction_bridges_the_caller(world: World, receiver: Receiver) -> None:
    flow = await _flow(world, receiver)
    await world.worker("ann")
    call = world.sim.state.calls.enqueue(_twiml(flow, receiver.answer("/queue-result", 200)))
    await world.sim.state.callbacks.drain()
    assert (await world.fetch(call.task_sid)).assignment_status == "assigned"
    params = await _result(world, receiver)
    assert params["QueueResult"] == "bridged"
    assert params["CallSid"] == call.sid
    [reservation] = await world.reservations(call.task_sid)
    assert reservation.reservation_status == "accepted"


async def test_a_caller_who_gives_up_cancels_the_task_and_reports_hangup(
    world: World, receiver: Receiver
) -> None:
    flow = await _flow(world)
    call = world.sim.state.calls.enqueue(
        _twiml(flow, receiver.answer("/queue-result", 200)), hangup_after=45
    )
    await world.sim.advance(44)
    assert call.result is None
    await world.sim.advance(1)
    task = await world.fetch(call.task_sid)
    assert task.assignment_status == "canceled"
    assert task.reason == "hangup"
    params = await _result(world, receiver)
    assert params["QueueResult"] == "hangup"
    assert params["QueueTime"] == "45"


async def test_a_task_that_expires_takes_the_caller_out_of_the_queue(
    world: World, receiver: Receiver
) -> None:
    flow = await _flow(world)
    call = world.sim.state.calls.enqueue(
        _twiml(flow, receiver.answer("/queue-result", 200), timeout=60)
    )
    await world.sim.advance(60)
    assert (await world.fetch(call.task_sid)).assignment_status == "canceled"
    assert (await _result(world, receiver))["QueueResult"] == "leave"


@pytest.mark.parametrize(
    "twiml",
    [
        "<Response><Say>hi</Say></Response>",
        "<Response><Enqueue>support</Enqueue></Response>",
        "<Response><Enqueue workflowSid='WW0'><Task>[1]</Task></Enqueue></Response>",
        "<Response><Enqueue",
    ],
    ids=["no-enqueue", "no-workflow", "not-an-object", "not-xml"],
)
async def test_twiml_that_cannot_enqueue_is_refused(world: World, twiml: str) -> None:
    with pytest.raises(EnqueueError):
        world.sim.state.calls.enqueue(twiml)


async def test_calls_and_policies_are_controlled_over_http(
    world: World, receiver: Receiver
) -> None:
    flow = await _flow(world)
    ann = await world.worker("ann")
    base = world.sim.url + CONTROL_PREFIX
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/workers/{ann}/policy", json={"answer_after": 1, "complete_after": None}
        ) as response:
            assert response.status == 200
        async with http.post(f"{base}/workers/policy", json={"accept": 2}) as response:
            assert response.status == 400
        async with http.post(
            f"{base}/calls", json={"twiml": _twiml(flow, receiver.answer("/queue-result", 200))}
        ) as response:
            assert response.status == 201
            call = await response.json()
        await world.sim.advance(1)
        assert (await world.fetch(call["task_sid"])).assignment_status == "assigned"
        async with http.post(f"{base}/calls/{call['call_sid']}/hangup") as response:
            assert (await response.json())["queue_result"] == "hangup"
        async with http.post(f"{base}/calls", json={"twiml": "<Response/>"}) as response:
            assert response.status == 400
