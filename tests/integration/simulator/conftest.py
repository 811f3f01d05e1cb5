"""Fixtures: a simulator on a real socket and the real async twilio SDK pointed at it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from twilio.rest import Client

from escalator.simulator import RunningSimulator, start_simulator
from tests.integration.simulator.schema import Recorder, ValidatingHttpClient, load_spec

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "simulator-test-token"


@pytest.fixture
def credentials() -> tuple[str, str]:
    """The account SID and auth token the simulator accepts."""
    return ACCOUNT_SID, AUTH_TOKEN


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    sim = await start_simulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    try:
        yield sim
    finally:
        await sim.close()


# Every response an SDK client built here receives, and every raw one passed to `conforming`, is
# checked against Twilio's OpenAPI description (when the file is present: see schema.SPEC_PATH);
# what does not conform fails the test that got it.
SCHEMA = Recorder()


def _client_for(sim: RunningSimulator, account_sid: str, auth_token: str) -> Client:
    client = Client(account_sid, auth_token, http_client=ValidatingHttpClient(load_spec(), SCHEMA))
    client.taskrouter.base_url = sim.url
    return client


async def conforming(response: ClientResponse) -> ClientResponse:
    """Check a response read outside the SDK (raw aiohttp) as the SDK's client checks its own."""
    text = await response.text()
    SCHEMA.check(load_spec(), response.method, str(response.url), response.status, text)
    return response


def _report(violations: list[str]) -> str:
    lines = "\n  ".join(violations)
    return f"{len(violations)} simulator response(s) break Twilio's OpenAPI description:\n  {lines}"


@pytest.fixture(autouse=True)
def _conforming_responses() -> Generator[None, None, None]:
    """Fail the test whose setup, body or teardown received a non-conforming response."""
    SCHEMA.take()
    yield
    violations = SCHEMA.take()
    if violations:
        pytest.fail(_report(violations), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Report violations as the test's own failure rather than as a teardown error."""
    yield
    violations = SCHEMA.take()
    if violations:
        pytest.fail(_report(violations), pytrace=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SCHEMA.validated:
        terminalreporter.write_line(
            f"simulator schema: {SCHEMA.validated} responses validated against "
            "Twilio's TaskRouter OpenAPI description"
        )


@pytest.fixture
async def client(simulator: RunningSimulator) -> AsyncIterator[Client]:
    client = _client_for(simulator, ACCOUNT_SID, AUTH_TOKEN)
    try:
        yield client
    finally:
        await client.http_client.close()


@pytest.fixture
async def make_client(
    simulator: RunningSimulator,
) -> AsyncIterator[Callable[[str, str], Client]]:
    """Clients with other credentials, closed at teardown."""
    made: list[Client] = []

    def make(account_sid: str, auth_token: str) -> Client:
        made.append(_client_for(simulator, account_sid, auth_token))
        return made[-1]

    yield make
    for client in made:
        await client.http_client.close()


class Provisioned:
    """A workspace with two queues, a workflow routing on `type`, and two workers."""

    def __init__(self, workspace: Any, support: Any, sales: Any, workflow: Any) -> None:
        self.workspace = workspace
        self.support = support
        self.sales = sales
        self.workflow = workflow

    @property
    def ws(self) -> Any:
        return self.workspace


def routing_configuration(support_sid: str, sales_sid: str) -> str:
    return json.dumps(
        {
            "task_routing": {
                "filters": [
                    {
                        "filter_friendly_name": "sales",
                        "expression": "type == 'sales'",
                        "targets": [{"queue": sales_sid, "priority": 7, "timeout": 60}],
                    },
                    {
                        "filter_friendly_name": "billing",
                        "expression": "skills HAS 'billing'",
                        "targets": [
                            {"queue": support_sid, "expression": "task.lang IN worker.langs"}
                        ],
                    },
                ],
                "default_filter": {"queue": support_sid},
            }
        }
    )


@pytest.fixture
async def provisioned(client: Client) -> Provisioned:
    v1 = client.taskrouter.v1
    workspace = await v1.workspaces.create_async(friendly_name="Escalations")
    ws = v1.workspaces(workspace.sid)
    support = await ws.task_queues.create_async(
        friendly_name="Support", target_workers="skills HAS 'support'"
    )
    sales = await ws.task_queues.create_async(friendly_name="Sales")
    workflow = await ws.workflows.create_async(
        friendly_name="Escalation routing",
        configuration=routing_configuration(support.sid, sales.sid),
        task_reservation_timeout=30,
    )
    await ws.workers.create_async(
        friendly_name="alice", attributes=json.dumps({"skills": ["support"], "langs": ["en"]})
    )
    await ws.workers.create_async(
        friendly_name="bob", attributes=json.dumps({"skills": ["sales"], "langs": ["fr"]})
    )
    return Provisioned(workspace, support, sales, workflow)


CreateTask = Callable[..., Awaitable[Any]]


@pytest.fixture
def create_task(client: Client, provisioned: Provisioned) -> CreateTask:
    async def create(attributes: dict[str, Any], **kwargs: Any) -> Any:
        ws = client.taskrouter.v1.workspaces(provisioned.workspace.sid)
        return await ws.tasks.create_async(
            attributes=json.dumps(attributes), workflow_sid=provisioned.workflow.sid, **kwargs
        )

    return create


# --- the virtual clock, a callback receiver, and a small provisioning helper ---------------


@pytest.fixture
async def vsim() -> AsyncIterator[RunningSimulator]:
    """A simulator on a virtual clock: timeouts pass only when the test advances time."""
    sim = await start_simulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, virtual_clock=True, seed=7
    )
    try:
        yield sim
    finally:
        await sim.close()


@pytest.fixture
async def vclient(vsim: RunningSimulator) -> AsyncIterator[Client]:
    """The async SDK pointed at the virtual-clock simulator."""
    client = _client_for(vsim, ACCOUNT_SID, AUTH_TOKEN)
    try:
        yield client
    finally:
        await client.http_client.close()


class Received:
    """One request the receiver got."""

    def __init__(self, url: str, params: dict[str, str], headers: dict[str, str]) -> None:
        self.url = url
        self.params = params
        self.headers = headers

    @property
    def signature(self) -> str:
        return self.headers.get("X-Twilio-Signature", "")


class Receiver:
    """An aiohttp app on a real socket recording every POST; answers are set per path."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answers: dict[str, tuple[int, str, float]] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    def answer(self, path: str, status: int = 200, body: str = "", delay: float = 0.0) -> str:
        """Answer POSTs to `path` with `status` and `body` after `delay` s; returns its URL."""
        self.answers[path] = (status, body, delay)
        return self.url + path

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.url == self.url + path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        params = {k: v for k, v in form.items() if isinstance(v, str)}
        # Rebuild the URL the sender used, as a webhook handler behind no proxy would.
        url = f"{self.url}{request.path_qs}"
        self.requests.append(Received(url, params, dict(request.headers)))
        status, body, delay = self.answers.get(request.path, (204, "", 0.0))
        if delay:
            await asyncio.sleep(delay)
        content_type = "application/json" if body else None
        return web.Response(status=status, text=body or None, content_type=content_type)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on a real socket."""
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


class World:
    """A workspace built through the SDK, with shortcuts the routing tests share."""

    def __init__(self, client: Client, sim: RunningSimulator, ws: Any, sid: str) -> None:
        self.client = client
        self.sim = sim
        self.ws = ws
        self.sid = sid
        self.activities: dict[str, str] = {}

    @classmethod
    async def create(cls, client: Client, sim: RunningSimulator, **kwargs: Any) -> World:
        v1 = client.taskrouter.v1
        workspace = await v1.workspaces.create_async(friendly_name="World", **kwargs)
        world = cls(client, sim, v1.workspaces(workspace.sid), workspace.sid)
        for activity in await world.ws.activities.list_async():
            world.activities[activity.friendly_name] = activity.sid
        return world

    @property
    def workspace(self) -> Any:
        return self.sim.state.workspaces[self.sid]

    async def queue(self, name: str, target_workers: str = "1==1", **kwargs: Any) -> str:
        queue = await self.ws.task_queues.create_async(
            friendly_name=name, target_workers=target_workers, **kwargs
        )
        return str(queue.sid)

    async def workflow(
        self,
        filters: list[dict[str, Any]],
        default: str | None = None,
        *,
        reservation_timeout: int = 120,
        **kwargs: Any,
    ) -> str:
        routing: dict[str, Any] = {"filters": filters}
        if default:
            routing["default_filter"] = {"queue": default}
        workflow = await self.ws.workflows.create_async(
            friendly_name=f"flow{len(self.workspace.workflows)}",
            configuration=json.dumps({"task_routing": routing}),
            task_reservation_timeout=reservation_timeout,
            **kwargs,
        )
        return str(workflow.sid)

    async def worker(self, name: str, available: bool = True, **attributes: Any) -> str:
        worker = await self.ws.workers.create_async(
            friendly_name=name,
            attributes=json.dumps(attributes),
            activity_sid=self.activities["Available" if available else "Offline"],
        )
        return str(worker.sid)

    async def task(self, workflow_sid: str, **attributes: Any) -> Any:
        priority = attributes.pop("_priority", None)
        timeout = attributes.pop("_timeout", None)
        kwargs: dict[str, Any] = {}
        if priority is not None:
            kwargs["priority"] = priority
        if timeout is not None:
            kwargs["timeout"] = timeout
        return await self.ws.tasks.create_async(
            attributes=json.dumps(attributes), workflow_sid=workflow_sid, **kwargs
        )

    async def fetch(self, task_sid: str) -> Any:
        return await self.ws.tasks(task_sid).fetch_async()

    async def reservations(self, task_sid: str, **kwargs: Any) -> list[Any]:
        return list(await self.ws.tasks(task_sid).reservations.list_async(**kwargs))

    async def pending(self, task_sid: str) -> Any:
        found = await self.reservations(task_sid, reservation_status="pending")
        assert len(found) == 1, [r.reservation_status for r in await self.reservations(task_sid)]
        return found[0]

    async def set_activity(self, worker_sid: str, activity: str) -> None:
        await self.ws.workers(worker_sid).update_async(activity_sid=self.activities[activity])

    def types(self, **fields: str) -> list[str]:
        return self.sim.state.events.types(**fields)


@pytest.fixture
async def world(vclient: Client, vsim: RunningSimulator) -> World:
    return await World.create(vclient, vsim)
