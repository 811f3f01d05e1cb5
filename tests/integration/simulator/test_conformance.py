"""Every implemented operation's JSON body validates against Twilio's OpenAPI response schema."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_schema_validator import OAS30Validator

from escalator.simulator import RunningSimulator

# The project root's parent holds `shared/` in this workspace.
SPEC = (
    Path(__file__).resolve().parents[3]
    / ".."
    / "shared"
    / "reference"
    / "twilio_taskrouter_v1.json"
)


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    if not SPEC.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"Twilio's TaskRouter OpenAPI description is missing at {SPEC}")
        pytest.skip(
            "Twilio's TaskRouter OpenAPI description (../shared/reference/"
            "twilio_taskrouter_v1.json) is absent outside this project's workspace"
        )
    loaded: dict[str, Any] = json.loads(SPEC.read_text())
    return loaded


def _resolve(node: Any, spec: dict[str, Any]) -> Any:
    """Inline every `$ref` (the spec's refs all point into #/components/schemas)."""
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].removeprefix("#/components/schemas/")
            return _resolve(spec["components"]["schemas"][name], spec)
        return {k: _resolve(v, spec) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(item, spec) for item in node]
    return node


def _check(spec: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    operation = spec["paths"][path][method]
    schema = _resolve(
        operation["responses"][str(status)]["content"]["application/json"]["schema"], spec
    )
    OAS30Validator(schema, format_checker=OAS30Validator.FORMAT_CHECKER).validate(body)
    if "meta" in schema.get("properties", {}):
        key = body["meta"]["key"]
        assert set(schema["properties"]["meta"]["properties"]) <= set(body["meta"])
        item_schema = schema["properties"][key]["items"]
        records = body[key]
        assert records, f"{operation['operationId']} returned no record to check"
    else:
        item_schema, records = schema, [body]
    for record in records:
        missing = set(item_schema["properties"]) - set(record)
        assert not missing, f"{operation['operationId']} lacks {sorted(missing)}"


async def test_every_operation_matches_twilio_schema(
    spec: dict[str, Any], simulator: RunningSimulator, credentials: tuple[str, str]
) -> None:
    checked: set[str] = set()
    auth = {"Authorization": aiohttp.encode_basic_auth(*credentials)}
    base = f"{simulator.url}/v1"
    async with aiohttp.ClientSession(headers=auth) as session:

        async def call(method: str, spec_path: str, url: str, status: int, **kw: Any) -> Any:
            async with session.request(method.upper(), base + url, **kw) as response:
                assert response.status == status, await response.text()
                body = await response.json() if status != 204 else None
            if body is not None:
                _check(spec, spec_path, method, status, body)
            checked.add(spec["paths"][spec_path][method]["operationId"])
            return body

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
            created = await call(
                "post", f"{ws_path}/{collection}", f"{w}/{collection}", 201, data=data
            )
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
        queue = (await call("get", f"{ws_path}/TaskQueues", f"{w}/TaskQueues", 200))["task_queues"][
            0
        ]
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
    assert expected <= checked, sorted(expected - checked)
