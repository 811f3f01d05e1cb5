"""Every implemented operation's JSON body validates against Twilio's OpenAPI response schema."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from escalator.simulator import RunningSimulator
from tests.integration.simulator.schema import SPEC_PATH, Spec, load_spec


@pytest.fixture(scope="module")
def spec() -> Spec:
    loaded = load_spec()
    if loaded is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Twilio's TaskRouter OpenAPI description is missing at {SPEC_PATH}")
        pytest.skip(
            "Twilio's TaskRouter OpenAPI description (../shared/reference/"
            "twilio_taskrouter_v1.json) is absent outside this project's workspace"
        )
    return loaded


def _check(spec: Spec, path: str, method: str, status: int, url: str, body: Any) -> str:
    """Check `body` against the operation at `path`, found from `url` as the SDK's would be."""
    operation = spec.operation_at(method, path)
    assert spec.operation(method, "/v1" + url) == operation, f"{method} {url} is not {path}"
    problems = spec.check(operation, status, body, require_records=True)
    assert not problems, "\n".join(f"{operation.operation_id} at {p}: {m}" for p, m in problems)
    return operation.operation_id


class Caller:
    """Calls the simulator over HTTP and checks each answer against its operation's schema."""

    def __init__(self, spec: Spec, session: aiohttp.ClientSession, base: str) -> None:
        self._spec = spec
        self._session = session
        self._base = base
        self.checked: set[str] = set()

    async def __call__(self, method: str, spec_path: str, url: str, status: int, **kw: Any) -> Any:
        async with self._session.request(method.upper(), self._base + url, **kw) as response:
            assert response.status == status, await response.text()
            body = await response.json() if status != 204 else None
        self.checked.add(_check(self._spec, spec_path, method, status, url, body))
        return body


@pytest.fixture
async def call(
    spec: Spec, simulator: RunningSimulator, credentials: tuple[str, str]
) -> AsyncIterator[Caller]:
    """A checking caller with the simulator's credentials."""
    auth = {"Authorization": aiohttp.encode_basic_auth(*credentials)}
    async with aiohttp.ClientSession(headers=auth) as session:
        yield Caller(spec, session, f"{simulator.url}/v1")


async def test_every_operation_matches_twilio_schema(call: Caller) -> None:
    ws_path = "/v1/Workspaces/{WorkspaceSid}"
    ws = await call("post", "/v1/Workspaces", "/Workspaces", 201, data={"FriendlyName": "C"})
    w = f"/Workspaces/{ws['sid']}"
    await call("get", "/v1/Workspaces", "/Workspaces", 200)
    await call("get", "/v1/Workspaces/{Sid}", w, 200)
    await call("post", "/v1/Workspaces/{Sid}", w, 200, data={"FriendlyName": "C2"})
    for collection, data in (
        ("Activities", {"FriendlyName": "Busy", "Available": "false"}),
        ("TaskChannels", {"FriendlyName": "Fax", "UniqueName": "fax"}),
        ("TaskQueues", {"FriendlyName": "Q", "TargetWorkers": "skills HAS 'x'"}),
        ("Workers", {"FriendlyName": "alice", "Attributes": '{"skills": ["x"]}'}),
    ):
        created = await call("post", f"{ws_path}/{collection}", f"{w}/{collection}", 201, data=data)
        instance = f"{w}/{collection}/{created['sid']}"
        await call("get", f"{ws_path}/{collection}", f"{w}/{collection}", 200)
        await call("get", f"{ws_path}/{collection}/{{Sid}}", instance, 200)
        await call(
            "post",
            f"{ws_path}/{collection}/{{Sid}}",
            instance,
            200,
            data={"FriendlyName": "renamed"},
        )
    queue = (await call("get", f"{ws_path}/TaskQueues", f"{w}/TaskQueues", 200))["task_queues"][0]
    configuration = json.dumps(
        {
            "task_routing": {
                "filters": [{"expression": "a == 1", "targets": [{"queue": queue["sid"]}]}],
                "default_filter": {"queue": queue["sid"]},
            }
        }
    )
    flow = await call(
        "post",
        f"{ws_path}/Workflows",
        f"{w}/Workflows",
        201,
        data={"FriendlyName": "F", "Configuration": configuration},
    )
    await call("get", f"{ws_path}/Workflows", f"{w}/Workflows", 200)
    await call("get", f"{ws_path}/Workflows/{{Sid}}", f"{w}/Workflows/{flow['sid']}", 200)
    await call(
        "post",
        f"{ws_path}/Workflows/{{Sid}}",
        f"{w}/Workflows/{flow['sid']}",
        200,
        data={"TaskReservationTimeout": "60"},
    )
    task = await call(
        "post", f"{ws_path}/Tasks", f"{w}/Tasks", 201, data={"Attributes": '{"a": 1}'}
    )
    assert task["task_queue_sid"] == queue["sid"]
    await call("get", f"{ws_path}/Tasks", f"{w}/Tasks", 200)
    await call("get", f"{ws_path}/Tasks/{{Sid}}", f"{w}/Tasks/{task['sid']}", 200)
    await call(
        "post",
        f"{ws_path}/Tasks/{{Sid}}",
        f"{w}/Tasks/{task['sid']}",
        200,
        data={"AssignmentStatus": "canceled", "Reason": "done"},
    )
    await call("delete", f"{ws_path}/Tasks/{{Sid}}", f"{w}/Tasks/{task['sid']}", 204)
    await call("delete", f"{ws_path}/Workflows/{{Sid}}", f"{w}/Workflows/{flow['sid']}", 204)
    for collection in ("Workers", "TaskQueues", "TaskChannels", "Activities"):
        listed = await call("get", f"{ws_path}/{collection}", f"{w}/{collection}", 200)
        last = listed[listed["meta"]["key"]][-1]
        await call(
            "delete", f"{ws_path}/{collection}/{{Sid}}", f"{w}/{collection}/{last['sid']}", 204
        )
    await call("delete", "/v1/Workspaces/{Sid}", w, 204)
    resources = ("Workspace", "Activity", "TaskChannel", "TaskQueue", "Worker", "Workflow", "Task")
    expected = {
        f"{verb}{name}"
        for verb in ("Create", "Fetch", "List", "Update", "Delete")
        for name in resources
    }
    assert expected <= call.checked, sorted(expected - call.checked)


async def test_reservations_and_events_match_twilio_schema(call: Caller) -> None:
    ws_path = "/v1/Workspaces/{WorkspaceSid}"

    ws = await call("post", "/v1/Workspaces", "/Workspaces", 201, data={"FriendlyName": "R"})
    w = f"/Workspaces/{ws['sid']}"
    activities = (await call("get", f"{ws_path}/Activities", f"{w}/Activities", 200))["activities"]
    available = next(a["sid"] for a in activities if a["available"])
    queue = await call(
        "post", f"{ws_path}/TaskQueues", f"{w}/TaskQueues", 201, data={"FriendlyName": "Q"}
    )
    configuration = json.dumps({"task_routing": {"default_filter": {"queue": queue["sid"]}}})
    await call(
        "post",
        f"{ws_path}/Workflows",
        f"{w}/Workflows",
        201,
        data={"FriendlyName": "F", "Configuration": configuration},
    )
    worker = await call(
        "post",
        f"{ws_path}/Workers",
        f"{w}/Workers",
        201,
        data={"FriendlyName": "ann", "ActivitySid": available},
    )
    task = await call("post", f"{ws_path}/Tasks", f"{w}/Tasks", 201, data={"Attributes": "{}"})
    by_task = f"{ws_path}/Tasks/{{TaskSid}}/Reservations"
    by_worker = f"{ws_path}/Workers/{{WorkerSid}}/Reservations"
    task_url = f"{w}/Tasks/{task['sid']}/Reservations"
    worker_url = f"{w}/Workers/{worker['sid']}/Reservations"
    [reservation] = (await call("get", by_task, task_url, 200))["reservations"]
    await call("get", by_worker, worker_url, 200)
    sid = reservation["sid"]
    await call("get", f"{by_task}/{{Sid}}", f"{task_url}/{sid}", 200)
    await call("get", f"{by_worker}/{{Sid}}", f"{worker_url}/{sid}", 200)
    await call(
        "post",
        f"{by_task}/{{Sid}}",
        f"{task_url}/{sid}",
        200,
        data={"ReservationStatus": "accepted"},
    )
    await call(
        "post",
        f"{by_worker}/{{Sid}}",
        f"{worker_url}/{sid}",
        200,
        data={"ReservationStatus": "completed"},
    )
    events = (await call("get", f"{ws_path}/Events", f"{w}/Events", 200))["events"]
    await call("get", f"{ws_path}/Events/{{Sid}}", f"{w}/Events/{events[0]['sid']}", 200)
    expected = {
        f"{verb}{name}"
        for verb in ("List", "Fetch", "Update")
        for name in ("TaskReservation", "WorkerReservation")
    } | {"ListEvent", "FetchEvent"}
    assert expected <= call.checked, sorted(expected - call.checked)


async def test_statistics_match_twilio_schema(call: Caller) -> None:
    ws_path = "/v1/Workspaces/{WorkspaceSid}"

    ws = await call("post", "/v1/Workspaces", "/Workspaces", 201, data={"FriendlyName": "S"})
    w = f"/Workspaces/{ws['sid']}"
    activities = (await call("get", f"{ws_path}/Activities", f"{w}/Activities", 200))["activities"]
    available = next(a["sid"] for a in activities if a["available"])
    queue = await call(
        "post", f"{ws_path}/TaskQueues", f"{w}/TaskQueues", 201, data={"FriendlyName": "Q"}
    )
    configuration = json.dumps({"task_routing": {"default_filter": {"queue": queue["sid"]}}})
    flow = await call(
        "post",
        f"{ws_path}/Workflows",
        f"{w}/Workflows",
        201,
        data={"FriendlyName": "F", "Configuration": configuration},
    )
    await call(
        "post",
        f"{ws_path}/Workers",
        f"{w}/Workers",
        201,
        data={"FriendlyName": "ann", "ActivitySid": available},
    )
    for _ in range(2):  # one reserved, one pending
        await call("post", f"{ws_path}/Tasks", f"{w}/Tasks", 201, data={"Attributes": "{}"})
    window = {"Minutes": "30", "SplitByWaitTime": "5,30"}
    for kind in ("RealTimeStatistics", "CumulativeStatistics", "Statistics"):
        await call(
            "get",
            f"{ws_path}/TaskQueues/{{TaskQueueSid}}/{kind}",
            f"{w}/TaskQueues/{queue['sid']}/{kind}",
            200,
            params=window if kind != "RealTimeStatistics" else {},
        )
        await call(
            "get",
            f"{ws_path}/Workflows/{{WorkflowSid}}/{kind}",
            f"{w}/Workflows/{flow['sid']}/{kind}",
            200,
            params=window if kind != "RealTimeStatistics" else {},
        )
        await call("get", f"{ws_path}/{kind}", f"{w}/{kind}", 200)
    await call("get", f"{ws_path}/TaskQueues/Statistics", f"{w}/TaskQueues/Statistics", 200)
    expected = {
        f"Fetch{resource}{kind}"
        for resource in ("TaskQueue", "Workflow", "Workspace")
        for kind in ("RealTimeStatistics", "CumulativeStatistics", "Statistics")
    } | {"ListTaskQueuesStatistics"}
    assert expected <= call.checked, sorted(expected - call.checked)


async def test_the_response_check_reports_what_breaks_the_description(spec: Spec) -> None:
    base = "http://127.0.0.1:1/v1/Workspaces/WS" + "0" * 32
    error = {"code": 20404, "message": "gone", "more_info": "https://x.test/20404", "status": 404}
    cases = {
        ("GET", "/Tasks/WT1", 200, '{"age": "3"}'): "FetchTask (GET /v1/Workspaces/WS",
        ("GET", "/Activities", 200, '{"meta": {}}'): "ListActivity",
        ("POST", "/Workers", 200, "{}"): "status 200 is not documented (documented: 201)",
        ("DELETE", "/Workers/WK1", 204, "{}"): "a body where the operation documents none",
        ("GET", "/Workers/WK1", 404, json.dumps(error | {"status": 400})): "#/status: 400",
        ("GET", "/Workers/WK1", 500, "<html>"): "the body is not JSON",
        ("GET", "/Nothing", 200, "{}"): "no operation (GET",
    }
    for (method, path, status, text), expected in cases.items():
        problems = spec.check_response(method, base + path, status, text)
        assert any(expected in problem for problem in problems), (path, problems)
    assert spec.check_response("GET", base + "/Tasks/WT1", 200, '{"age": "3"}')[0].endswith(
        "at #/age: '3' is not of type 'integer'"
    )
    assert spec.check_response("GET", base + "/Workers/WK1", 404, json.dumps(error)) == []
    assert spec.check_response("GET", base + "/Workers/Statistics", 200, "{}")[0].startswith(
        "FetchWorkerStatistics"
    )
    assert spec.check_response("POST", "http://127.0.0.1:1/_sim/faults", 400, "x") == []
