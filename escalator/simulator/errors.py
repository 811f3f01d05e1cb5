"""Twilio's error bodies and the exception the handlers raise to produce them."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

__all__ = ["TwilioApiError", "bad_parameter", "error_response", "not_found"]


class TwilioApiError(Exception):
    """An error answered with Twilio's JSON error body."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def bad_parameter(message: str) -> TwilioApiError:
    """A 400 with Twilio's generic invalid-parameter code 20001."""
    return TwilioApiError(400, 20001, message)


def not_found(path: str) -> TwilioApiError:
    """A 404 with Twilio's code 20404 and its message naming the path."""
    return TwilioApiError(404, 20404, f"The requested resource {path} was not found")


def error_response(error: TwilioApiError) -> web.Response:
    """Render `error` as Twilio does: code, message, more_info and status."""
    body = {
        "code": error.code,
        "message": error.message,
        "more_info": f"https://www.twilio.com/docs/errors/{error.code}",
        "status": error.status,
    }
    return web.json_response(body, status=error.status, headers=error.headers)
