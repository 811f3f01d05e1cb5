"""POST /taskrouter/assignment: the routing file's instruction per channel, without the database."""

from __future__ import annotations

import json
import time

from tests.integration.conftest import Service, ServiceFactory
from tests.integration.test_store_outage import TcpProxy, proxied_postgres
from tests.integration.webhooks import connect, escalate, metric, post_signed, settle

__all__ = ["proxied_postgres"]  # the fixture, shared with the store outage tests


def _answers(service: Service) -> list[dict[str, object]]:
    return [
        json.loads(delivery.answer or "{}")
        for delivery in service.sim.running.state.callbacks.deliveries
        if delivery.kind == "assignment"
    ]


async def test_chat_is_accepted_and_voice_is_dequeued_from_the_routing_files_caller_id(
    service: Service,
) -> None:
    await connect(service, assignment=True)
    chat = await escalate(service, "assign-chat", channel="chat")
    await settle(service)
    assert _answers(service) == [{"instruction": "accept"}]
    assert (await service.get(chat))["status"] == "assigned"
    await escalate(service, "assign-voice", channel="voice", call_sid="CA" + "1" * 32)
    await settle(service)
    assert _answers(service)[1] == {"instruction": "dequeue", "from": "+15005550006"}
    assert (
        metric(
            service,
            "escalator_assignment_instructions_total",
            channel="voice",
            instruction="dequeue",
        )
        == 1
    )


async def test_the_assignment_callback_answers_quickly_while_the_database_is_unreachable(
    service_factory: ServiceFactory, proxied_postgres: tuple[str, TcpProxy]
) -> None:
    url, proxy = proxied_postgres
    service = await service_factory(database_url=url)
    await proxy.cut()
    params = {
        "TaskSid": "WT" + "2" * 32,
        "ReservationSid": "WR" + "2" * 32,
        "WorkerSid": "WK" + "2" * 32,
        "TaskAttributes": json.dumps({"escalation_id": "esc_x", "channel": "chat"}),
    }
    started = time.monotonic()
    response = await post_signed(service, "/taskrouter/assignment", params)
    assert response.status == 200
    assert await response.json() == {"instruction": "accept"}
    assert time.monotonic() - started < 0.5
    voice = {**params, "TaskAttributes": "{}", "TaskChannelUniqueName": "voice"}
    answer = await post_signed(service, "/taskrouter/assignment", voice)
    assert (await answer.json())["instruction"] == "dequeue"
    # The events webhook needs the database: 503 with Retry-After, never a 500.
    event = {"EventType": "task.canceled", "TaskSid": "WT" + "2" * 32, "Timestamp": "1"}
    refused = await post_signed(service, "/taskrouter/events", event)
    assert refused.status == 503
    assert refused.headers["Retry-After"]


async def test_an_unsigned_assignment_callback_is_refused(service: Service) -> None:
    response = await post_signed(
        service, "/taskrouter/assignment", {"TaskSid": "WT" + "3" * 32}, signature="forged"
    )
    assert response.status == 403
    assert metric(service, "escalator_signature_failures_total", endpoint="assignment") == 1
