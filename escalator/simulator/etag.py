"""ETag and If-Match for Tasks and Workers: a revision number bumped on every change."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from escalator.simulator.errors import TwilioApiError

__all__ = ["check_if_match", "etag_headers"]


class _Revisioned(Protocol):
    revision: int


def etag_headers(resource: _Revisioned) -> dict[str, str]:
    """The `ETag` header for `resource`'s current revision."""
    return {"ETag": str(resource.revision)}


def check_if_match(request: web.Request, resource: _Revisioned) -> None:
    """A 412 when the request's `If-Match` names another revision."""
    expected = request.headers.get("If-Match")
    if expected is None or expected.strip() == "*":
        return
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in expected.split(",")}
    if str(resource.revision) not in tags:
        raise TwilioApiError(
            412,
            20412,
            f"Precondition failed: If-Match {expected} does not match ETag {resource.revision}",
        )
