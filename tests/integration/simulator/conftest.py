"""Fixtures: a simulator on a real socket and the real async twilio SDK pointed at it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from escalator.simulator import RunningSimulator, start_simulator

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


def _client_for(sim: RunningSimulator, account_sid: str, auth_token: str) -> Client:
    client = Client(account_sid, auth_token, http_client=AsyncTwilioHttpClient())
    client.taskrouter.base_url = sim.url
    return client


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
