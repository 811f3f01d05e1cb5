"""Status callbacks: each change POSTed once, signed, retried after a 500; bad URLs refused."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from escalator.api.app import status_callbacks
from escalator.api.keys import SETTINGS
from escalator.dispatcher import Dispatcher
from escalator.dispatcher.callback_urls import CallbackUrlRefused, UrlPolicy, check_callback_url
from escalator.dispatcher.callbacks import StatusCallbacks
from escalator.settings import Settings
from escalator.simulator.agents import WorkerPolicy
from tests.integration.conftest import Service, ServiceFactory
from tests.integration.webhooks import body, connect, metric, settle

SECRET = "callback-secret-for-tests"


def _verify(headers: Any, raw: bytes) -> bool:
    fields = dict(part.split("=", 1) for part in headers["X-Escalator-Signature"].split(","))
    expected = hmac.new(
        SECRET.encode(), fields["t"].encode() + b"." + raw, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


class Receiver:
    """An AI side's webhook endpoint on a real socket; it answers 500 to its first request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any], bool]] = []
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        self.server = TestServer(app, host="127.0.0.1")

    async def hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        delivery = request.headers["X-Escalator-Delivery"]
        self.requests.append((delivery, json.loads(raw), _verify(request.headers, raw)))
        return web.Response(status=500 if len(self.requests) == 1 else 204)


@pytest.fixture
async def receiver() -> Any:
    receiver = Receiver()
    await receiver.server.start_server()
    yield receiver
    await receiver.server.close()


@pytest.fixture
async def senders() -> Any:
    opened: list[StatusCallbacks] = []
    yield opened
    for sender in opened:
        await sender.close()


async def _with_callbacks(factory: ServiceFactory, senders: list[StatusCallbacks]) -> Service:
    service = await factory(
        callback_secret=SECRET, callback_allow_http=True, callback_allow_private=True
    )
    sender = status_callbacks(_settings(service), service.metrics)
    assert sender is not None
    senders.append(sender)
    old = service.dispatcher
    service.dispatcher = Dispatcher(
        store=service.store,
        taskrouter=service.taskrouter,
        workflow_sid=service.sim.workspace.workflow_sid,
        clock=service.clock,
        metrics=service.metrics,
        owner="test",
        call_timeout=5,
        sleep=old._sleep,
        callbacks=sender,
    )
    return service


def _settings(service: Service) -> Settings:
    return service.client.server.app[SETTINGS]


@pytest.mark.virtual_clock
async def test_each_change_is_delivered_once_signed_and_retried_after_a_500(
    service_factory: ServiceFactory, receiver: Receiver, senders: list[StatusCallbacks]
) -> None:
    service = await _with_callbacks(service_factory, senders)
    running = service.sim.running
    await connect(service)
    running.state.agents.default = WorkerPolicy(accept=1.0, answer_after=1.0, complete_after=2.0)
    url = str(receiver.server.make_url("/hook"))
    response = await service.post(body("called-back", status_callback_url=url))
    assert response.status == 201
    escalation_id = (await response.json())["id"]
    for _ in range(6):
        await settle(service)
        await running.advance(1.0)
        service.clock.advance(120)  # the retry of the failed delivery falls due
    await settle(service)
    assert (await service.get(escalation_id))["status"] == "completed"
    deliveries = [delivery for delivery, _, _ in receiver.requests]
    assert all(signed for _, _, signed in receiver.requests)
    assert deliveries.count(deliveries[0]) == 2  # answered 500, then delivered again
    assert len(set(deliveries)) == len(deliveries) - 1
    delivered: dict[str, dict[str, Any]] = {d: b for d, b, _ in receiver.requests}
    ordered = sorted(delivered.values(), key=lambda b: b["sequence"])
    assert [b["status"] for b in ordered] == ["queued", "reserved", "assigned", "completed"]
    assert {b["escalation_id"] for b in ordered} == {escalation_id}
    assert ordered[-1]["outcome"] == "completed"
    assert metric(service, "escalator_status_callbacks_total", result="sent") == 4
    assert metric(service, "escalator_status_callbacks_total", result="failed") == 1
    assert await service.store.outbox_backlog() == 0


@pytest.mark.parametrize(
    ("url", "overrides"),
    [
        ("http://127.0.0.1:9/hook", {"callback_allow_http": True}),
        ("https://127.0.0.1/hook", {}),
        ("https://10.1.2.3/hook", {}),
        ("https://169.254.169.254/latest/meta-data", {}),
        ("https://[::1]/hook", {}),
        ("https://localhost/hook", {}),
        ("http://example.com/hook", {}),
    ],
    ids=["loopback", "loopback-https", "private", "link-local", "ipv6-loopback", "name", "http"],
)
async def test_a_disallowed_callback_url_is_422_naming_the_field(
    service_factory: ServiceFactory, url: str, overrides: dict[str, object]
) -> None:
    service = await service_factory(callback_secret=SECRET, **overrides)
    response = await service.post(body("bad-url", status_callback_url=url))
    assert response.status == 422, await response.text()
    problem = await response.json()
    assert [error["field"] for error in problem["errors"]] == ["status_callback_url"]
    assert await service.store.outbox_backlog() == 0


async def test_callbacks_need_a_secret(service: Service) -> None:
    response = await service.post(body("no-secret", status_callback_url="https://example.com/x"))
    assert response.status == 422
    assert "ESCALATOR_CALLBACK_SECRET" in (await response.json())["detail"]


async def test_url_checks_allow_public_hosts_and_multicast_is_refused() -> None:
    await check_callback_url("https://93.184.216.34/hook", UrlPolicy())
    with pytest.raises(CallbackUrlRefused):
        await check_callback_url("https://224.0.0.1/hook", UrlPolicy())
    with pytest.raises(CallbackUrlRefused):
        await check_callback_url("https://user:pw@93.184.216.34/", UrlPolicy())
    await check_callback_url("http://127.0.0.1/", UrlPolicy(allow_http=True, allow_private=True))
