"""Twilio's TaskRouter OpenAPI description: operation lookup and response validation.

`Spec` finds the operation behind a request (HTTP method + path template) and checks a response
against it: a documented status, a 2xx JSON body valid against the operation's schema with every
schema property present, or an error body in Twilio's shape (`code`, `message`, `more_info`,
`status`). `ValidatingHttpClient` is the SDK's async HTTP client doing that for every response it
receives, recording what does not conform in a `Recorder`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response

__all__ = ["SPEC_PATH", "Operation", "Recorder", "Spec", "ValidatingHttpClient", "load_spec"]

# The project root's parent holds `shared/` in this workspace.
SPEC_PATH = (
    Path(__file__).resolve().parents[3]
    / ".."
    / "shared"
    / "reference"
    / "twilio_taskrouter_v1.json"
)

# Twilio's REST error body; the OpenAPI description documents success responses only.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "message", "more_info", "status"],
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string", "minLength": 1},
        "more_info": {"type": "string", "format": "uri"},
        "status": {"type": "integer"},
    },
}


# OAS30Validator's checker skips `uri` without the optional rfc3987 package and knows nothing of
# Twilio's `uri-map` (the `links` objects): check both here, absolute http(s) URLs only.
FORMATS = FormatChecker()
FORMATS.checkers.update(OAS30Validator.FORMAT_CHECKER.checkers)


def _is_url(value: object) -> bool:
    parts = urlsplit(value) if isinstance(value, str) else None
    return parts is not None and parts.scheme in {"http", "https"} and bool(parts.netloc)


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    return not isinstance(value, str) or _is_url(value)


@FORMATS.checks("uri-map")
def _uri_map(value: object) -> bool:
    return not isinstance(value, dict) or all(_is_url(v) for v in value.values())


def _pointer(path: Any) -> str:
    """A JSON pointer in URI-fragment form: `#` is the document, `#/workers/0/sid` a member."""
    escaped = (str(part).replace("~", "~0").replace("/", "~1") for part in path)
    return "#" + "".join(f"/{part}" for part in escaped)


def _errors(validator: OAS30Validator, body: Any) -> list[tuple[str, str]]:
    found: list[ValidationError] = sorted(
        validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path]
    )
    return [(_pointer(error.absolute_path), error.message) for error in found]


@dataclass(frozen=True)
class Operation:
    """One operation of the description: its id, method and path template."""

    operation_id: str
    method: str
    template: str

    def matches(self, path: str) -> bool:
        parts, template = path.strip("/").split("/"), self.template.strip("/").split("/")
        return len(parts) == len(template) and all(
            t == p or (t.startswith("{") and t.endswith("}") and p)
            for t, p in zip(template, parts, strict=True)
        )

    @property
    def literal_segments(self) -> int:
        return sum(not s.startswith("{") for s in self.template.split("/"))


class Spec:
    """Twilio's TaskRouter v1 OpenAPI description with cached, `$ref`-free response schemas."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.operations = [
            Operation(op["operationId"], method, template)
            for template, item in document["paths"].items()
            for method, op in item.items()
            if isinstance(op, dict) and "operationId" in op
        ]
        self._schemas: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        self._validators: dict[int, OAS30Validator] = {}

    def operation(self, method: str, path: str) -> Operation | None:
        """The operation serving `method path`; literal segments beat `{Sid}` parameters."""
        candidates = [
            op for op in self.operations if op.method == method.lower() and op.matches(path)
        ]
        return max(candidates, key=lambda op: op.literal_segments, default=None)

    def operation_at(self, method: str, template: str) -> Operation:
        """The operation declared at `template` for `method`."""
        return next(
            op for op in self.operations if op.method == method.lower() and op.template == template
        )

    def documented_statuses(self, op: Operation) -> list[str]:
        return list(self.document["paths"][op.template][op.method]["responses"])

    def schema(self, op: Operation, status: int) -> dict[str, Any] | None:
        """The resolved JSON schema of `op`'s `status` response (None when it has no body)."""
        key = (op.template, op.method, str(status))
        if key not in self._schemas:
            response = self.document["paths"][op.template][op.method]["responses"][str(status)]
            content = response.get("content", {}).get("application/json")
            self._schemas[key] = None if content is None else self._resolve(content["schema"])
        return self._schemas[key]

    def _resolve(self, node: Any) -> Any:
        """Inline every `$ref` (the description's refs all point into #/components/schemas)."""
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].removeprefix("#/components/schemas/")
                return self._resolve(self.document["components"]["schemas"][name])
            return {k: self._resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self._resolve(item) for item in node]
        return node

    def _validator(self, schema: dict[str, Any]) -> OAS30Validator:
        if id(schema) not in self._validators:
            self._validators[id(schema)] = OAS30Validator(schema, format_checker=FORMATS)
        return self._validators[id(schema)]

    def check(
        self, op: Operation, status: int, body: Any, *, require_records: bool = False
    ) -> list[tuple[str, str]]:
        """Problems of a parsed 2xx `body` as (JSON pointer, message); [] when it conforms.

        Beyond schema validity every property the schema declares must be present, in each
        record of a list page; `require_records` also asks a list page to hold a record.
        """
        if str(status) not in self.documented_statuses(op):
            documented = ", ".join(self.documented_statuses(op))
            return [("#", f"status {status} is not documented (documented: {documented})")]
        schema = self.schema(op, status)
        if schema is None:
            return [] if body is None else [("#", "a body where the operation documents none")]
        problems = _errors(self._validator(schema), body)
        if problems or not isinstance(body, dict):
            return problems
        properties = schema.get("properties", {})
        if "meta" in properties:
            meta = body.get("meta")
            if not isinstance(meta, dict):
                return [("#", "a list page lacks its 'meta'")]
            missing_meta = set(properties["meta"]["properties"]) - set(meta)
            if missing_meta:
                problems.append(("#/meta", f"lacks {sorted(missing_meta)}"))
            key = meta.get("key")
            if key not in properties or key not in body:
                return [*problems, ("#/meta/key", f"{key!r} names no list of this page")]
            item_schema, records = properties[key]["items"], body[key]
            pointers = [f"#/{key}/{n}" for n in range(len(records))]
            if require_records and not records:
                problems.append((f"#/{key}", "the page holds no record to check"))
        else:
            item_schema, records, pointers = schema, [body], ["#"]
        for pointer, record in zip(pointers, records, strict=True):
            missing = set(item_schema.get("properties", {})) - set(record)
            if missing:
                problems.append((pointer, f"lacks {sorted(missing)}"))
        return problems

    def check_response(self, method: str, url: str, status: int, text: str) -> list[str]:
        """Readable violations of one HTTP response; [] when it conforms or is not Twilio's."""
        path = urlsplit(url).path
        if path.startswith("/_sim/"):
            return []  # the simulator's control API is no TaskRouter operation
        op = self.operation(method, path)
        where = f"{op.operation_id if op else 'no operation'} ({method.upper()} {path} -> {status})"
        body: Any = None
        if text.strip():
            try:
                body = json.loads(text)
            except ValueError:
                return [f"{where}: the body is not JSON: {text[:200]!r}"]
        if status >= 400:
            problems = _errors(self._validator(ERROR_SCHEMA), body)
            if not problems and body["status"] != status:
                problems.append(("#/status", f"{body['status']} differs from HTTP {status}"))
        elif op is None:
            problems = [("#", "the OpenAPI description has no such operation")]
        else:
            problems = self.check(op, status, body)
        return [f"{where} at {pointer}: {message}" for pointer, message in problems]


@cache
def load_spec() -> Spec | None:
    """The description at SPEC_PATH, or None where the file is absent."""
    if not SPEC_PATH.is_file():
        return None
    return Spec(json.loads(SPEC_PATH.read_text()))


@dataclass
class Recorder:
    """What validation found: violations since the last `take()`, responses checked overall."""

    violations: list[str] = field(default_factory=list)
    validated: int = 0

    def check(self, spec: Spec | None, method: str, url: str, status: int, text: str) -> None:
        """Validate one response from the simulator's TaskRouter API (not its `/_sim/` API)."""
        if spec is not None and not urlsplit(url).path.startswith("/_sim/"):
            self.validated += 1
            self.violations += spec.check_response(method, url, status, text)

    def take(self) -> list[str]:
        taken, self.violations = self.violations, []
        return taken


class ValidatingHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's async HTTP client checking each response against Twilio's description."""

    def __init__(self, spec: Spec | None, recorder: Recorder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.recorder = recorder

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        response: Response = await super().request(
            method, url, params, data, headers, auth, timeout, allow_redirects
        )
        self.recorder.check(self.spec, method, url, response.status_code, response.text)
        return response
