"""Twilio's list paging: PageSize, PageToken and the `meta` block with absolute URLs."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from escalator.simulator.errors import TwilioApiError

__all__ = ["PageRequest", "page_body", "page_request"]

T = TypeVar("T")
_PAGING_PARAMS = frozenset({"PageSize", "Page", "PageToken"})
_TOKEN = re.compile(r"^PT(\d+)-(\d+)$")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class PageRequest:
    """Which slice of a list to answer."""

    page_size: int
    page: int
    offset: int


def _token(page: int, offset: int) -> str:
    return f"PT{page}-{offset}"


def page_request(request: web.Request) -> PageRequest:
    """Read PageSize and PageToken; refuse a bare `Page` as TaskRouter does (error 40153)."""
    query = request.query
    raw_size = query.get("PageSize")
    page_size = DEFAULT_PAGE_SIZE
    if raw_size is not None:
        if not raw_size.isdigit() or not 1 <= int(raw_size) <= MAX_PAGE_SIZE:
            raise TwilioApiError(
                400, 20001, f"Invalid PageSize: must be between 1 and {MAX_PAGE_SIZE}"
            )
        page_size = int(raw_size)
    token = query.get("PageToken")
    # TaskRouter pages by token only; `Page` is just client state echoed next to a token.
    if query.get("Page") not in (None, "0") and token is None:
        raise TwilioApiError(
            400, 40153, "Page parameter is not supported, use PageToken from next_page_url"
        )
    if token is None:
        return PageRequest(page_size, 0, 0)
    match = _TOKEN.match(token)
    if match is None:
        raise TwilioApiError(400, 21481, f"Invalid PageToken: {token}")
    return PageRequest(page_size, int(match[1]), int(match[2]))


def _url(request: web.Request, params: dict[str, str]) -> str:
    kept = {k: v for k, v in request.query.items() if k not in _PAGING_PARAMS}
    query = urlencode({**kept, **params})
    return f"{request.scheme}://{request.host}{request.path}?{query}"


def page_body(
    request: web.Request,
    key: str,
    items: Sequence[T],
    render: Callable[[T], dict[str, Any]],
) -> dict[str, Any]:
    """A list response: `key` holds this page's rendered items, `meta` the paging links."""
    paging = page_request(request)
    size = paging.page_size
    chunk = items[paging.offset : paging.offset + size]
    next_offset = paging.offset + size
    next_url = None
    if next_offset < len(items):
        next_url = _url(
            request,
            {
                "PageSize": str(size),
                "Page": str(paging.page + 1),
                "PageToken": _token(paging.page + 1, next_offset),
            },
        )
    previous_url = None
    if paging.offset > 0:
        previous_offset = max(0, paging.offset - size)
        previous_url = _url(
            request,
            {
                "PageSize": str(size),
                "Page": str(paging.page - 1),
                "PageToken": _token(paging.page - 1, previous_offset),
            },
        )
    current = {"PageSize": str(size), "Page": str(paging.page)}
    if paging.offset:
        current["PageToken"] = _token(paging.page, paging.offset)
    return {
        key: [render(item) for item in chunk],
        "meta": {
            "page": paging.page,
            "page_size": size,
            "first_page_url": _url(request, {"PageSize": str(size), "Page": "0"}),
            "previous_page_url": previous_url,
            "url": _url(request, current),
            "next_page_url": next_url,
            "key": key,
        },
    }
