"""Status callback URLs escalator may call: checked when posted and again before each send,
so the feature cannot be turned into a forger of requests to internal addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from escalator.errors import EscalatorError

__all__ = ["CallbackUrlRefused", "GuardedResolver", "UrlPolicy", "check_callback_url"]

_IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackUrlRefused(EscalatorError):
    """This status callback URL is not one escalator calls."""


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """What status callback URLs may be: http as well as https, private addresses too."""

    allow_http: bool = False
    allow_private: bool = False


def _refused_address(address: _IpAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        not address.is_global
        or address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _check_addresses(host: str, addresses: list[str]) -> None:
    if not addresses:
        raise CallbackUrlRefused(f"the host {host!r} does not resolve")
    for text in addresses:
        if _refused_address(ipaddress.ip_address(text.split("%", 1)[0])):
            raise CallbackUrlRefused(
                f"the host {host!r} resolves to a loopback, private, link-local, multicast or "
                "reserved address"
            )


async def check_callback_url(url: str, policy: UrlPolicy, *, resolve_within: float = 3.0) -> None:
    """Raise CallbackUrlRefused unless ``url`` is one escalator may call under ``policy``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CallbackUrlRefused("the URL is not valid") from None
    allowed = ("https", "http") if policy.allow_http else ("https",)
    if parts.scheme not in allowed:
        raise CallbackUrlRefused("the URL must use https")
    host = parts.hostname
    if not host:
        raise CallbackUrlRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise CallbackUrlRefused("the URL must not carry credentials")
    if policy.allow_private:
        return
    try:
        _check_addresses(host, [str(ipaddress.ip_address(host))])
        return
    except ValueError:
        pass  # a name, not an address literal
    try:
        async with asyncio.timeout(resolve_within):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port or 443, type=socket.SOCK_STREAM
            )
    except (OSError, TimeoutError):
        raise CallbackUrlRefused(f"the host {host!r} does not resolve") from None
    _check_addresses(host, [str(info[4][0]) for info in infos])


class GuardedResolver(AbstractResolver):
    """Resolves as aiohttp does, but refuses disallowed addresses at connect time too, so a
    name that changes its answer after the check (DNS rebinding) still cannot reach them."""

    def __init__(self, policy: UrlPolicy) -> None:
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: Any = socket.AF_INET
    ) -> list[ResolveResult]:
        """The host's addresses, all of them allowed."""
        results = await self._inner.resolve(host, port, family)
        if not self._policy.allow_private:
            _check_addresses(host, [str(result["host"]) for result in results])
        return results

    async def close(self) -> None:
        """Release the resolver."""
        await self._inner.close()
