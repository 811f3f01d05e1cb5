"""openapi.yaml is the truth: every operation and status it documents, against the real process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import pytest
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec
from twilio.request_validator import RequestValidator

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"
API_KEY = "e2e-contract-key-0123456789abcdef"
UNKNOWN_ID = "esc_" + "0" * 32
# Documented but not provoked end to end: a 503 needs the database to fail under a running
# service, which is the chaos suite's job. Every other documented status must be observed here.
NOT_EXERCISED = {
    ("post", "/escalations", 503),
    ("post", "/taskrouter/events", 503),
    ("get", "/escalations/{escalation_id}", 503),
    ("get", "/readyz", 503),
    ("get", "/escalations", 503),
    ("post", "/escalations/{escalation_id}/cancel", 503),
    # Also "too many streams", which needs ESCALATOR_MAX_STREAMS streams open at once: the
    # integration tests provoke it.
    ("get", "/escalations/{escalation_id}/stream", 503),
    # An Idempotency-Key held by another replica's uncommitted transaction: PostgreSQL only (the
    # demo runs on SQLite, one writer); tests/integration/test_idempotency.py provokes it.
    ("post", "/escalations", 409),
}


class Answer(MockResponse):
    """A response as openapi-core reads it, and its JSON."""

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Contract:
    """The spec, and the (method, path template, status) triples the tests observed."""

    spec: dict[str, Any]
    openapi: OpenAPI
    seen: set[tuple[str, str, int]] = field(default_factory=set)

    def documented(self) -> set[tuple[str, str, int]]:
        paths = self.spec["paths"].items()
        return {
            (m, p, int(s)) for p, item in paths for m, op in item.items() for s in op["responses"]
        }

    def template(self, path: str) -> str:
        for template in self.spec["paths"]:
            if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
                return template
        raise AssertionError(f"{path} is in no path of openapi.yaml")


class Api:
    """Calls the service and checks each request and response against openapi.yaml."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, contract: Contract) -> None:
        self.session, self.base_url, self.contract = session, base_url, contract

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        content_type: str = "application/json",
        token: str | None = API_KEY,
        spec_accepts: bool = True,
        extra_headers: dict[str, str] | None = None,
    ) -> Answer:
        """One exchange; ``spec_accepts``: whether openapi.yaml admits the request."""
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if data is not None else {}
        headers |= extra_headers or {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = self.base_url + path
        async with self.session.request(method, url, data=data, headers=headers) as r:
            ctype, raw = r.headers.get("Content-Type", ""), await r.read()
            response = Answer(raw, r.status, dict(r.headers), ctype)
        path, _, query = path.partition("?")
        request = MockRequest(
            self.base_url,
            method,
            path,
            args=parse_qsl(query),
            headers=headers,
            data=data,
            content_type=content_type,
        )
        self.contract.openapi.validate_response(request, response)
        request_errors = list(self.contract.openapi.iter_request_errors(request))
        assert (not request_errors) is spec_accepts, f"{method} {path}: {request_errors}"
        self.contract.seen.add((method.lower(), self.contract.template(path), r.status))
        return response


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the demo runs and writes its output."""
    return tmp_path_factory.mktemp("contract")


@pytest.fixture(scope="module")
def auth_token(base_url: str, demo_dir: Path) -> str:
    """The auth token the demo's simulator signs callbacks with, as its banner prints it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = (demo_dir / "stdout.log").read_text(errors="replace")
        found = re.search(r"Auth token\s+(\S+)", text)
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError("the demo printed no auth token")


@pytest.fixture(scope="module")
def base_url(demo_dir: Path) -> Iterator[str]:
    """`escalator demo` as a separate process, on a free port and a fresh SQLite file."""
    tmp_path = demo_dir
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESCALATOR_", "TWILIO_"))}
    env |= {
        "ESCALATOR_PORT": str(port),
        "ESCALATOR_API_KEYS": API_KEY,
        "ESCALATOR_DATABASE_URL": f"sqlite:///{tmp_path / 'e.db'}",
        "ESCALATOR_LOG_FORMAT": "json",
    }
    url, log = f"http://127.0.0.1:{port}", tmp_path / "stderr.log"
    with (tmp_path / "stdout.log").open("wb") as out, log.open("wb") as err:
        command = [sys.executable, "-m", "escalator", "demo"]
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 15
            while not _answers(f"{url}/healthz"):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-2000:]
                    pytest.fail(f"escalator demo did not come up (exit {process.poll()}):\n{tail}")
                time.sleep(0.1)
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                returncode = process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise
    assert returncode == 0, log.read_text(errors="replace")[-2000:]


@pytest.fixture(scope="module")
def contract() -> Contract:
    spec = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    # openapi-core parses only the media types it knows; problem+json is JSON, SSE is text.
    deserializers = {
        "application/problem+json": lambda value, **_params: json.loads(value),
        "text/event-stream": lambda value, **_params: bytes(value).decode(),
    }
    config = Config(extra_media_type_deserializers=deserializers)
    return Contract(spec=spec, openapi=OpenAPI.from_file_path(str(SPEC_PATH), config=config))


@pytest.fixture
async def api(base_url: str, contract: Contract) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, base_url, contract)


def escalation(conversation_id: str, **fields: object) -> dict[str, object]:
    """A valid request body; ``fields`` override or add."""
    return {
        "conversation_id": conversation_id,
        "reason_code": "billing_dispute",
        "summary": "Customer disputes a $42 charge on the March invoice and asked for a person.",
        "channel": "chat",
        "customer": {"name": "Ada", "phone": "+15558675310", "language": "en"},
        "context": {"invoice-id": "INV-0314", "amount": 42.0},
    } | fields


def test_spec_is_valid_openapi_and_its_examples_fit_their_schemas(contract: Contract) -> None:
    spec = contract.spec
    validate_spec(spec)
    assert spec["info"]["version"] == "0.1.0"

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = reduce(dict.__getitem__, node["$ref"].removeprefix("#/").split("/"), spec)
        return node

    checked, pending = 0, [spec["paths"], spec["components"]["responses"]]
    while pending:  # every media type or header with a schema and examples, however nested
        node = pending.pop()
        pending += [v for v in node.values() if isinstance(v, dict)]
        if "schema" not in node or not {"example", "examples"} & node.keys():
            continue
        values = [resolve(e)["value"] for e in node.get("examples", {}).values()]
        checker = OAS31Validator.FORMAT_CHECKER
        for value in values + ([node["example"]] if "example" in node else []):
            OAS31Validator(spec | node["schema"], format_checker=checker).validate(value)
            checked += 1
    assert checked >= 15


async def test_health_readiness_and_metrics_answer_without_a_key(api: Api) -> None:
    assert (await api.call("GET", "/healthz", token=None)).json() == {"status": "ok"}
    assert (await api.call("GET", "/readyz", token=None)).json() == {"status": "ready"}
    metrics = await api.call("GET", "/metrics", token=None)
    assert b"# TYPE escalator_escalations_received_total counter" in metrics.data


@pytest.mark.parametrize(
    ("token", "spec_accepts", "challenge"),
    [
        (None, False, 'Bearer realm="escalator"'),
        ("not-a-key-we-know-at-all", True, "invalid_token"),
    ],
)
async def test_calls_without_a_known_api_key_are_refused(
    api: Api, token: str | None, spec_accepts: bool, challenge: str
) -> None:
    for method, path, body in [
        ("POST", "/escalations", escalation("auth-refused")),
        ("GET", f"/escalations/{UNKNOWN_ID}", None),
    ]:
        answer = await api.call(method, path, body, token=token, spec_accepts=spec_accepts)
        assert answer.status_code == 401
        assert challenge in answer.headers["WWW-Authenticate"]


async def test_bodies_that_are_not_a_json_escalation_are_refused(api: Api) -> None:
    malformed = await api.call("POST", "/escalations", b'{"conversation_id": ', spec_accepts=False)
    assert malformed.status_code == 400
    assert malformed.json()["type"] == "urn:escalator:problem:malformed-request"
    raw = json.dumps(escalation("wrong-type")).encode()
    text = await api.call(
        "POST", "/escalations", raw, content_type="text/plain", spec_accepts=False
    )
    assert text.status_code == 415
    assert text.headers["Accept-Post"] == "application/json"
    big = escalation("too-big", summary="x" * 70_000)
    assert (await api.call("POST", "/escalations", big, spec_accepts=False)).status_code == 413


@pytest.mark.parametrize(
    ("changes", "field", "spec_accepts"),
    [
        ({"summary": None}, "summary", False),
        ({"channel": "fax"}, "channel", False),
        ({"colour": "blue"}, "colour", False),
        ({"customer": {"phone": "555-0100"}}, "customer.phone", False),
        # Limits the spec can only describe: bytes of UTF-8 (not characters), and nesting depth.
        ({"summary": "€" * 6_000}, "summary", True),
        ({"context": reduce(lambda inner, _: {"k": inner}, range(8), {})}, "context", True),
    ],
)
async def test_invalid_fields_are_refused_and_named(
    api: Api, changes: dict[str, object], field: str, spec_accepts: bool
) -> None:
    body = {k: v for k, v in escalation("invalid", **changes).items() if v is not None}
    answer = await api.call("POST", "/escalations", body, spec_accepts=spec_accepts)
    assert answer.status_code == 422
    assert [error["field"] for error in answer.json()["errors"]] == [field]


async def test_duplicate_conversation_returns_existing_escalation(api: Api) -> None:
    created = await api.call("POST", "/escalations", escalation("conv-duplicate"))
    assert created.status_code == 201
    first = created.json()
    assert created.headers["Location"] == f"/escalations/{first['id']}"
    assert [first[k] for k in ("status", "reason_known", "department")] == [
        "received",
        True,
        "billing",
    ]
    again = await api.call("POST", "/escalations", escalation("conv-duplicate", summary="Again."))
    assert again.status_code == 200
    assert again.headers["Content-Location"] == f"/escalations/{first['id']}"
    assert [again.json()[k] for k in ("id", "summary")] == [first["id"], first["summary"]]


async def test_unknown_reason_takes_default_route_and_its_task_is_queued(api: Api) -> None:
    body = escalation("conv-unknown-reason", reason_code="no_such_reason")
    created = (await api.call("POST", "/escalations", body)).json()
    assert (created["reason_known"], created["department"]) == (False, "general")
    deadline = asyncio.get_running_loop().time() + 2
    while True:
        current = (await api.call("GET", f"/escalations/{created['id']}")).json()
        if current["status"] != "received" or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    # The demo's workers act at once: the escalation may already be further along.
    assert current["status"] in ("queued", "reserved", "assigned")
    assert current["task_sid"].startswith("WT")
    assert [entry["status"] for entry in current["history"]][:2] == ["received", "queued"]


async def test_unknown_escalation_is_not_found(api: Api) -> None:
    answer = await api.call("GET", f"/escalations/{UNKNOWN_ID}")
    assert answer.status_code == 404
    assert answer.json()["instance"] == f"/escalations/{UNKNOWN_ID}"


class Webhook:
    """Signs form posts to the demo as TaskRouter signs them."""

    def __init__(self, api: Api, base_url: str, auth_token: str) -> None:
        self.api, self.base_url, self.validator = api, base_url, RequestValidator(auth_token)

    async def post(
        self,
        path: str,
        params: dict[str, str],
        *,
        signature: str | None = None,
        spec_accepts: bool = True,
    ) -> Answer:
        signed = self.validator.compute_signature(self.base_url + path, params)
        return await self.api.call(
            "POST",
            path,
            urlencode(params).encode(),
            content_type="application/x-www-form-urlencoded",
            token=None,
            extra_headers={"X-Twilio-Signature": signed if signature is None else signature},
            spec_accepts=spec_accepts,
        )


@pytest.fixture
def webhook(api: Api, base_url: str, auth_token: str) -> Webhook:
    return Webhook(api, base_url, auth_token)


async def test_taskrouter_events_are_acknowledged_refused_unsigned_and_malformed(
    webhook: Webhook,
) -> None:
    event = {"EventType": "task.canceled", "TaskSid": "WT" + "9" * 32, "Timestamp": "1795600000"}
    acknowledged = await webhook.post("/taskrouter/events", event)
    assert acknowledged.status_code == 204
    assert acknowledged.headers["Content-Type"].startswith("application/json")
    forged = await webhook.post("/taskrouter/events", event, signature="Zm9yZ2Vk")
    assert forged.status_code == 403
    malformed = await webhook.post(
        "/taskrouter/events", {"TaskSid": "WT" + "9" * 32}, spec_accepts=False
    )
    assert malformed.status_code == 400


async def test_the_demos_own_callbacks_move_an_escalation_to_assigned(api: Api) -> None:
    created = (await api.call("POST", "/escalations", escalation("conv-callbacks"))).json()
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        current = (await api.call("GET", f"/escalations/{created['id']}")).json()
        if current["status"] == "assigned" or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert current["status"] == "assigned"
    assert [e["status"] for e in current["history"]][:4] == [
        "received",
        "queued",
        "reserved",
        "assigned",
    ]


@pytest.mark.parametrize(
    ("attributes", "instruction"),
    [({"channel": "chat"}, {"instruction": "accept"}), ({"channel": "voice"}, "dequeue")],
)
async def test_the_assignment_callback_answers_the_routing_files_instruction(
    webhook: Webhook, attributes: dict[str, str], instruction: object
) -> None:
    params = {"TaskSid": "WT" + "8" * 32, "TaskAttributes": json.dumps(attributes)}
    answer = await webhook.post("/taskrouter/assignment", params)
    assert answer.status_code == 200
    body = answer.json()
    assert (
        body == instruction if isinstance(instruction, dict) else body["instruction"] == instruction
    )
    forged = await webhook.post("/taskrouter/assignment", params, signature="Zm9yZ2Vk")
    assert forged.status_code == 403


async def test_escalations_are_listed_a_page_at_a_time(api: Api) -> None:
    ids = []
    for n in range(3):
        created = await api.call("POST", "/escalations", escalation(f"conv-list-{n}"))
        ids.append(created.json()["id"])
    seen, cursor = [], ""
    while True:
        page = (await api.call("GET", f"/escalations?limit=2{cursor}")).json()
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert [i for i in seen if i in ids] == ids
    one = (
        await api.call(
            "GET",
            "/escalations?conversation_id=conv-list-1&status=received"
            "&status=queued&status=reserved&status=assigned",
        )
    ).json()
    assert [item["id"] for item in one["items"]] == [ids[1]]
    bad = await api.call("GET", "/escalations?status=lost", spec_accepts=False)
    assert bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == ["status"]
    refused = await api.call("GET", "/escalations", token="not-a-key-we-know-at-all")
    assert refused.status_code == 401


async def test_cancel_ends_canceled_then_conflicts_and_the_stream_ends_at_terminal(
    api: Api,
) -> None:
    created = (await api.call("POST", "/escalations", escalation("conv-cancel"))).json()
    path = f"/escalations/{created['id']}"
    canceled = await api.call("POST", f"{path}/cancel")
    assert canceled.status_code == 200
    # `canceled` at once when no task can exist yet, else once TaskRouter has canceled it (the
    # demo's workers answer an offer after 2 s: the cancel comes long before).
    current = canceled.json()
    deadline = asyncio.get_running_loop().time() + 5
    while current["cancel_requested"] and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        current = (await api.call("GET", path)).json()
    history = [(entry["event"], entry["status"]) for entry in current["history"]]
    assert (current["status"], current["outcome"]) == ("canceled", "canceled_by_client"), history
    again = await api.call("POST", f"{path}/cancel")
    assert again.status_code == 409
    assert (await api.call("POST", f"/escalations/{UNKNOWN_ID}/cancel")).status_code == 404
    refused = await api.call("POST", f"{path}/cancel", token="not-a-key-we-know-at-all")
    assert refused.status_code == 401
    stream = await api.call("GET", f"{path}/stream")
    assert stream.status_code == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    frames = [f for f in stream.data.decode().split("\n\n") if f.strip()]
    assert len(frames) == 1
    assert '"status":"canceled"' in frames[0]
    assert (await api.call("GET", f"/escalations/{UNKNOWN_ID}/stream")).status_code == 404
    unauthorized = await api.call("GET", f"{path}/stream", token="not-a-key-we-know-at-all")
    assert unauthorized.status_code == 401


# Last but one: its escalation may keep a demo worker busy, which later tests would miss.
async def test_an_idempotency_key_replays_refuses_another_body_and_must_be_well_formed(
    api: Api,
) -> None:
    key = {"Idempotency-Key": "e2e-8e03978e-40d5-43e8-bc93-6894a57f9324"}
    body = escalation("conv-idempotent")
    created = await api.call("POST", "/escalations", body, extra_headers=key)
    assert created.status_code == 201
    assert "Idempotent-Replayed" not in created.headers
    replayed = await api.call("POST", "/escalations", body, extra_headers=key)
    assert replayed.status_code == 200
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.headers["Content-Location"] == created.headers["Location"]
    assert replayed.json()["id"] == created.json()["id"]
    other = escalation("conv-idempotent-other")
    reused = await api.call("POST", "/escalations", other, extra_headers=key)
    assert reused.status_code == 422
    assert reused.json()["type"] == "urn:escalator:problem:idempotency-key-reused"
    malformed = await api.call(
        "POST",
        "/escalations",
        other,
        extra_headers={"Idempotency-Key": "k" * 256},
        spec_accepts=False,
    )
    assert malformed.status_code == 400
    assert malformed.json()["type"] == "urn:escalator:problem:malformed-request"


def test_every_documented_operation_and_status_was_exercised(
    contract: Contract, request: pytest.FixtureRequest
) -> None:
    """Runs last: the spec cannot grow an operation or a status that no test above observes."""
    defined = {name for name in vars(request.module) if name.startswith("test_")}
    mine = {item.originalname for item in request.session.items if item.module is request.module}
    if mine != defined:
        pytest.skip("the coverage check needs every test of this module to run")
    documented = contract.documented()
    assert contract.seen <= documented, f"observed but undocumented: {contract.seen - documented}"
    missing = documented - NOT_EXERCISED - contract.seen
    assert not missing, f"documented but never observed: {missing}"
    assert documented >= NOT_EXERCISED, f"stale allow-list: {NOT_EXERCISED - documented}"
