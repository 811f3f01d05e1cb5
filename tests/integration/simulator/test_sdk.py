"""The real async twilio SDK against the simulator on a real socket."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from escalator.simulator import RunningSimulator
from tests.integration.simulator.conftest import conforming

SID = re.compile(r"^(WS|WA|WK|WQ|WW|WT|TC|AC)[0-9a-f]{32}$")
CreateTask = Callable[..., Awaitable[Any]]
Provisioned = Any
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def test_new_workspace_has_default_activities_and_channels(client: Client) -> None:
    v1 = client.taskrouter.v1
    workspace = await v1.workspaces.create_async(
        friendly_name="Demo",
        event_callback_url="https://example.com/events",
        events_filter="task.created,task.canceled",
    )
    assert SID.match(workspace.sid)
    assert workspace.sid.startswith("WS")
    assert workspace.multi_task_enabled is True
    assert workspace.default_activity_name == "Offline"
    assert workspace.timeout_activity_sid == workspace.default_activity_sid
    assert workspace.event_callback_url == "https://example.com/events"
    assert workspace.events_filter == "task.created,task.canceled"
    ws = v1.workspaces(workspace.sid)
    activities = {a.friendly_name: a.available for a in await ws.activities.list_async()}
    assert activities == {"Offline": False, "Unavailable": False, "Available": True}
    channels = {c.unique_name for c in await ws.task_channels.list_async()}
    assert channels == {"default", "voice", "chat", "sms", "video", "email"}
    voice = await ws.task_channels("voice").fetch_async()
    assert voice.sid.startswith("TC")


async def test_workspace_crud_round_trip(client: Client) -> None:
    v1 = client.taskrouter.v1
    created = await v1.workspaces.create_async(friendly_name="Before")
    updated = await v1.workspaces(created.sid).update_async(friendly_name="After")
    fetched = await v1.workspaces(created.sid).fetch_async()
    assert updated.friendly_name == fetched.friendly_name == "After"
    assert fetched.url.endswith(f"/v1/Workspaces/{created.sid}")
    assert await v1.workspaces(created.sid).delete_async() is True
    with pytest.raises(TwilioRestException) as raised:
        await v1.workspaces(created.sid).fetch_async()
    assert (raised.value.status, raised.value.code) == (404, 20404)


async def test_provisioned_resources_read_back(client: Client, provisioned: Provisioned) -> None:
    ws = client.taskrouter.v1.workspaces(provisioned.workspace.sid)
    queue = await ws.task_queues(provisioned.support.sid).fetch_async()
    assert queue.target_workers == "skills HAS 'support'"
    assert (await ws.task_queues(provisioned.sales.sid).fetch_async()).target_workers == "1==1"
    workflow = await ws.workflows(provisioned.workflow.sid).fetch_async()
    assert workflow.task_reservation_timeout == 30
    assert json.loads(workflow.configuration)["task_routing"]["default_filter"] == {
        "queue": provisioned.support.sid
    }
    workers = await ws.workers.list_async()
    assert sorted(w.friendly_name for w in workers) == ["alice", "bob"]
    assert {w.activity_name for w in workers} == {"Offline"}
    supporters = await ws.workers.list_async(target_workers_expression="skills HAS 'support'")
    assert [w.friendly_name for w in supporters] == ["alice"]
    activity = await ws.activities.create_async(friendly_name="Busy", available=False)
    worker = await ws.workers(workers[0].sid).update_async(activity_sid=activity.sid)
    assert (worker.activity_name, worker.available) == ("Busy", False)


async def test_task_is_routed_by_first_matching_filter(
    client: Client, provisioned: Provisioned, create_task: CreateTask
) -> None:
    sales = await create_task({"type": "sales"}, priority=1)
    billing = await create_task({"type": "other", "skills": ["billing"]})
    fallback = await create_task({"type": "other"}, timeout=600, task_channel="chat")
    assert (sales.task_queue_sid, sales.priority) == (provisioned.sales.sid, 7)
    assert billing.task_queue_sid == provisioned.support.sid
    assert fallback.task_queue_sid == provisioned.support.sid
    assert (fallback.timeout, fallback.task_channel_unique_name) == (600, "chat")
    assert sales.assignment_status == "pending"
    assert sales.timeout == 86400
    ws = client.taskrouter.v1.workspaces(provisioned.workspace.sid)
    fetched = await ws.tasks(sales.sid).fetch_async()
    assert json.loads(fetched.attributes) == {"type": "sales"}
    assert fetched.workflow_friendly_name == "Escalation routing"
    assert fetched.task_queue_friendly_name == "Sales"
    assert fetched.date_created is not None
    assert fetched.date_created.utcoffset() is not None


async def test_task_create_validates_parameters(
    client: Client, provisioned: Provisioned, create_task: CreateTask
) -> None:
    ws = client.taskrouter.v1.workspaces(provisioned.workspace.sid)
    cases = [
        ({"attributes": json.dumps({"text": "x" * 4100})}, "Attributes"),
        ({"attributes": "[1, 2]"}, "Attributes"),
        ({"attributes": "{}", "priority": -1}, "Priority"),
        ({"attributes": "{}", "timeout": 1_209_601}, "Timeout"),
        ({"attributes": "{}", "task_channel": "fax"}, "TaskChannel"),
    ]
    for kwargs, parameter in cases:
        with pytest.raises(TwilioRestException) as raised:
            await ws.tasks.create_async(workflow_sid=provisioned.workflow.sid, **kwargs)
        assert (raised.value.status, raised.value.code) == (400, 20001)
        assert parameter in raised.value.msg
    second = await ws.workflows.create_async(
        friendly_name="Second",
        configuration=json.dumps(
            {"task_routing": {"default_filter": {"queue": provisioned.sales.sid}}}
        ),
    )
    with pytest.raises(TwilioRestException) as raised:
        await ws.tasks.create_async(attributes="{}")
    assert "WorkflowSid" in raised.value.msg
    task = await ws.tasks.create_async(attributes="{}", workflow_sid=second.sid)
    assert task.task_queue_sid == provisioned.sales.sid


async def test_paging_follows_next_page_urls(
    client: Client, provisioned: Provisioned, create_task: CreateTask
) -> None:
    created = [(await create_task({"n": n})).sid for n in range(5)]
    ws = client.taskrouter.v1.workspaces(provisioned.workspace.sid)
    listed = [t.sid for t in await ws.tasks.list_async(page_size=2)]
    streamed = [t.sid async for t in await ws.tasks.stream_async(page_size=2)]
    assert listed == streamed == created
    first = await ws.tasks.page_async(page_size=2)
    assert first.next_page_url is not None
    assert first.next_page_url.startswith("http://")
    third = await (await first.next_page_async()).next_page_async()
    assert [t.sid for t in third] == created[4:]
    assert third.next_page_url is None
    limited = await ws.tasks.list_async(limit=3, page_size=2)
    assert [t.sid for t in limited] == created[:3]


async def test_evaluate_task_attributes_filters_tasks(
    client: Client, provisioned: Provisioned, create_task: CreateTask, simulator: RunningSimulator
) -> None:
    # Filtering only: Twilio's 3-per-second limit on these lists is tested in test_limits.py.
    simulator.state.limits.configure(evaluate_per_second=None)
    a = await create_task({"escalation_id": "e1", "customer": {"tier": "gold"}, "skills": ["x"]})
    b = await create_task({"escalation_id": "e2", "customer": {"tier": "gold"}})
    await create_task({"escalation_id": "e3", "customer": {"tier": "silver"}, "skills": "x"})
    ws = client.taskrouter.v1.workspaces(provisioned.workspace.sid)

    async def matching(expression: str) -> set[str]:
        return {t.sid for t in await ws.tasks.list_async(evaluate_task_attributes=expression)}

    assert await matching("escalation_id == 'e2'") == {b.sid}
    assert await matching("customer.tier == 'gold'") == {a.sid, b.sid}
    assert await matching("customer.tier == 'gold' AND escalation_id != 'e1'") == {b.sid}
    assert await matching("skills HAS 'x'") == {a.sid}
    assert await matching("escalation_id IN ['e1', 'e3']") == {a.sid} | {
        t.sid for t in await ws.tasks.list_async() if "e3" in t.attributes
    }
    # The SDK raises a plain TwilioException for a failed list page, the response in args[1].
    with pytest.raises(TwilioException) as failed:
        await ws.tasks.list_async(evaluate_task_attributes="escalation_id == ")
    response = failed.value.args[1]
    body = json.loads(response.text)
    assert (response.status_code, body["code"]) == (400, 20001)
    assert "at position 17" in body["message"]


async def test_task_list_filters_and_ordering(
    client: Client, provisioned: Provisioned, create_task: CreateTask
) -> None:
    low = await create_task({"type": "other"}, priority=1)
    high = await create_task({"type": "other"}, priority=5)
    sales = await create_task({"type": "sales"})
    ws = client.taskrouter.v1.workspaces(provisioned.workspace.sid)
    await ws.tasks(low.sid).update_async(assignment_status="canceled", reason="test")
    pending = await ws.tasks.list_async(assignment_status=["pending"])
    assert {t.sid for t in pending} == {high.sid, sales.sid}
    both = await ws.tasks.list_async(assignment_status=["pending", "canceled"])
    assert len(both) == 3
    in_sales = await ws.tasks.list_async(task_queue_sid=provisioned.sales.sid)
    assert [t.sid for t in in_sales] == [sales.sid]
    by_priority = await ws.tasks.list_async(ordering="Priority:desc")
    assert [t.sid for t in by_priority] == [sales.sid, high.sid, low.sid]
    by_workflow = await ws.tasks.list_async(workflow_sid=provisioned.workflow.sid)
    assert len(by_workflow) == 3


async def test_task_update_and_delete(
    client: Client, provisioned: Provisioned, create_task: CreateTask
) -> None:
    task = await create_task({"type": "other"})
    ws = client.taskrouter.v1.workspaces(provisioned.workspace.sid)
    updated = await ws.tasks(task.sid).update_async(attributes='{"v": 2}', priority=9)
    assert (json.loads(updated.attributes), updated.priority) == ({"v": 2}, 9)
    with pytest.raises(TwilioRestException) as raised:
        await ws.tasks(task.sid).update_async(assignment_status="completed")
    assert raised.value.status == 400
    with pytest.raises(TwilioRestException):
        await ws.tasks(task.sid).update_async(assignment_status="canceled", attributes="{}")
    canceled = await ws.tasks(task.sid).update_async(
        assignment_status="canceled", reason="customer hung up"
    )
    assert (canceled.assignment_status, canceled.reason) == ("canceled", "customer hung up")
    assert await ws.tasks(task.sid).delete_async() is True
    with pytest.raises(TwilioRestException) as raised:
        await ws.tasks(task.sid).fetch_async()
    assert (raised.value.status, raised.value.code) == (404, 20404)


async def test_if_match_mismatch_is_412(
    client: Client,
    provisioned: Provisioned,
    create_task: CreateTask,
    simulator: RunningSimulator,
    credentials: tuple[str, str],
) -> None:
    task = await create_task({"type": "other"})
    ws = client.taskrouter.v1.workspaces(provisioned.workspace.sid)
    info = await ws.tasks(task.sid).fetch_with_http_info_async()
    # aiohttp's client spells the header `Etag`: look it up case-insensitively.
    etag = {k.lower(): v for k, v in info.headers.items()}["etag"]
    await ws.tasks(task.sid).update_async(if_match=etag, priority=3)
    with pytest.raises(TwilioRestException) as raised:
        await ws.tasks(task.sid).update_async(if_match=etag, priority=4)
    assert raised.value.status == 412
    # twilio 9.13's TaskContext.delete_async drops if_match, so DELETE goes out raw.
    url = f"{simulator.url}/v1/Workspaces/{provisioned.workspace.sid}/Tasks/{task.sid}"
    auth = {"Authorization": aiohttp.encode_basic_auth(*credentials)}
    async with aiohttp.ClientSession(headers=auth) as session:
        async with session.delete(url, headers={"If-Match": etag}) as response:
            await conforming(response)
            assert response.status == 412
            assert (await response.json())["status"] == 412
        headers = (await ws.tasks(task.sid).fetch_with_http_info_async()).headers
        fresh = {k.lower(): v for k, v in headers.items()}["etag"]
        assert fresh != etag
        async with session.delete(url, headers={"If-Match": fresh}) as response:
            await conforming(response)
            assert response.status == 204


async def test_wrong_credentials_are_401(
    make_client: Callable[[str, str], Client], credentials: tuple[str, str]
) -> None:
    account, token = credentials
    for account_sid, auth_token in ((account, "wrong"), ("AC" + "2" * 32, token)):
        workspaces = make_client(account_sid, auth_token).taskrouter.v1.workspaces
        with pytest.raises(TwilioRestException) as raised:
            await workspaces.create_async(friendly_name="Nope")
        assert (raised.value.status, raised.value.code) == (401, 20003)
        with pytest.raises(TwilioException) as failed:
            await workspaces.list_async()
        assert failed.value.args[1].status_code == 401


async def test_missing_auth_and_unknown_path_have_twilio_bodies(
    simulator: RunningSimulator, credentials: tuple[str, str]
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{simulator.url}/v1/Workspaces") as response:
            await conforming(response)
            assert response.status == 401
            assert (await response.json())["code"] == 20003
        auth = {"Authorization": aiohttp.encode_basic_auth(*credentials)}
        async with session.get(f"{simulator.url}/v1/Nothing", headers=auth) as response:
            body = await (await conforming(response)).json()
        assert body == {
            "code": 20404,
            "message": "The requested resource /v1/Nothing was not found",
            "more_info": "https://www.twilio.com/docs/errors/20404",
            "status": 404,
        }
        async with session.get(f"{simulator.url}/_sim/health") as response:
            assert response.status == 200


async def test_page_parameter_is_refused_with_40153(
    simulator: RunningSimulator, credentials: tuple[str, str]
) -> None:
    auth = {"Authorization": aiohttp.encode_basic_auth(*credentials)}
    async with aiohttp.ClientSession(headers=auth) as session:
        async with session.get(f"{simulator.url}/v1/Workspaces?Page=2") as response:
            body = await (await conforming(response)).json()
        assert (response.status, body["code"], body["status"]) == (400, 40153, 400)
        async with session.get(f"{simulator.url}/v1/Workspaces?PageSize=1001") as response:
            body = await (await conforming(response)).json()
        assert (response.status, body["code"]) == (400, 20001)
        assert "PageSize" in body["message"]


async def test_bad_expressions_are_400_20001(client: Client, provisioned: Provisioned) -> None:
    ws = client.taskrouter.v1.workspaces(provisioned.workspace.sid)
    routing_config = json.dumps(
        {
            "task_routing": {
                "filters": [
                    {
                        "expression": "type == 'sales')",
                        "targets": [{"queue": provisioned.sales.sid}],
                    }
                ]
            }
        }
    )
    with pytest.raises(TwilioRestException) as raised:
        await ws.workflows.create_async(friendly_name="Bad", configuration=routing_config)
    assert (raised.value.status, raised.value.code) == (400, 20001)
    assert "unexpected ')' at position 15" in raised.value.msg
    unprefixed = routing_config.replace(
        '"targets": [{', '"targets": [{"expression": "lang == 1", '
    ).replace("type == 'sales')", "type == 'sales'")
    with pytest.raises(TwilioRestException) as raised:
        await ws.workflows(provisioned.workflow.sid).update_async(configuration=unprefixed)
    assert "task." in raised.value.msg
    with pytest.raises(TwilioRestException) as raised:
        await ws.workflows.create_async(friendly_name="Bad", configuration="{not json")
    assert raised.value.code == 20001
    with pytest.raises(TwilioRestException) as raised:
        await ws.task_queues.create_async(friendly_name="Q", target_workers="skills HAS")
    assert (raised.value.code, "TargetWorkers" in raised.value.msg) == (20001, True)
    workflows = await ws.workflows.list_async()
    assert [w.sid for w in workflows] == [provisioned.workflow.sid]
