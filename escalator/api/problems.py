"""RFC 9457 problem details: every error the API answers, and the middleware that makes them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from escalator.errors import EscalationNotFound, EscalatorError, StoreUnavailable
from escalator.logs import get_logger

__all__ = [
    "IN_FLIGHT",
    "KEY_REUSED",
    "PROBLEM_JSON",
    "Problem",
    "error_middleware",
    "problem_response",
]

PROBLEM_JSON = "application/problem+json"
_log = get_logger(__name__)

_TITLES = {
    400: "Malformed request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid request",
    500: "Internal error",
    503: "Service unavailable",
}
_SLUGS = {
    400: "malformed-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "body-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    500: "internal-error",
    503: "unavailable",
}

# Problem types more specific than their status's: (slug, title).
KEY_REUSED = ("idempotency-key-reused", "Idempotency-Key reused with another request")
IN_FLIGHT = ("request-in-flight", "An earlier request is still in flight")


class Problem(Exception):
    """An error answer: raise it from a handler and the middleware renders it."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        kind: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        # (slug, title) of a problem type more specific than its status's
        self.kind = kind


def problem_response(request: web.Request, problem: Problem) -> web.Response:
    """The ``application/problem+json`` response for ``problem``."""
    slug, title = problem.kind or (
        _SLUGS.get(problem.status, "error"),
        _TITLES.get(problem.status, "Error"),
    )
    body: dict[str, Any] = {
        "type": f"urn:escalator:problem:{slug}",
        "title": title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.path,
    }
    if problem.errors is not None:
        body["errors"] = list(problem.errors)
    return web.Response(
        status=problem.status,
        text=json.dumps(body),
        content_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def _field_errors(errors: list[ErrorDetails]) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(part) for part in error["loc"]) or "(body)", "message": error["msg"]}
        for error in errors
    ]


def validation_problem(exc: ValidationError) -> Problem:
    """A 400 for a body that is not JSON, a 422 for JSON that does not fit the model."""
    errors = exc.errors(include_url=False, include_input=False)
    if any(error["type"] == "json_invalid" for error in errors):
        return Problem(400, "the body is not valid JSON")
    fields = _field_errors(errors)
    return Problem(
        422,
        f"{len(fields)} invalid field(s): {fields[0]['field']}: {fields[0]['message']}",
        errors=fields,
    )


def _from_http_exception(exc: web.HTTPException) -> Problem:
    headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
    if exc.status == 413:
        return Problem(413, "the request body is larger than this service accepts")
    return Problem(exc.status, exc.reason or _TITLES.get(exc.status, "Error"), headers=headers)


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(  # noqa: PLR0911 - one return per kind of error
    request: web.Request, handler: _Handler
) -> web.StreamResponse:
    """Turn every error into problem+json; never let a traceback reach the client."""
    try:
        return await handler(request)
    except Problem as problem:
        return problem_response(request, problem)
    except ValidationError as exc:
        return problem_response(request, validation_problem(exc))
    except StoreUnavailable as exc:
        _log.warning("store.unavailable", path=request.path)
        return problem_response(request, Problem(503, str(exc), headers={"Retry-After": "1"}))
    except EscalationNotFound as exc:
        return problem_response(request, Problem(404, str(exc)))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(request, _from_http_exception(exc))
    except EscalatorError as exc:
        _log.error("request.failed", path=request.path, error=type(exc).__name__)
        return problem_response(request, Problem(500, "escalator failed to handle the request"))
    except Exception:
        _log.exception("request.crashed", path=request.path)
        return problem_response(request, Problem(500, "escalator failed to handle the request"))
