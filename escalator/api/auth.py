"""API keys: ``Authorization: Bearer <key>``, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from aiohttp import web
from pydantic import SecretStr

from escalator.api.problems import Problem

__all__ = ["require_api_key"]


def require_api_key(request: web.Request, keys: Sequence[SecretStr]) -> int:
    """The index of the key the request carries; a 401 problem when it carries none we know."""
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Problem(
            401,
            "send an API key as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": 'Bearer realm="escalator"'},
        )
    candidate = presented.strip().encode()
    match = -1
    # Compare against every key, whatever matched, so timing says nothing about which one did.
    for index, key in enumerate(keys):
        if hmac.compare_digest(candidate, key.get_secret_value().encode()):
            match = index
    if match < 0:
        raise Problem(
            401,
            "the API key is not valid",
            headers={"WWW-Authenticate": 'Bearer realm="escalator", error="invalid_token"'},
        )
    return match
