"""A round-robin HTTP proxy in front of the replicas, as a Kubernetes Service is: TaskRouter's
callbacks go to one URL (the replicas' ``ESCALATOR_PUBLIC_URL``), and a replica that does not
accept the connection is skipped. A request whose replica died mid-answer gets a 502: for an
event callback that is a lost callback, which the reconciler must make up for."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence

import aiohttp
from aiohttp import web

__all__ = ["CallbackProxy"]

# Hop-by-hop headers, and those aiohttp sets itself.
_DROPPED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"}
)
# TaskRouter waits 15 s for an event callback's answer.
_UPSTREAM_TIMEOUT = 15.0


class CallbackProxy:
    """Forwards every request to the next live replica; counts what happened."""

    def __init__(self, upstreams: Callable[[], Sequence[str]]) -> None:
        self._upstreams = upstreams
        self._turn = itertools.count()
        self.counts: Counter[str] = Counter()
        self.seconds = 0.0
        self.requests = 0
        self.errors: list[str] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self, port: int) -> None:
        """Listen on 127.0.0.1:``port``."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=_UPSTREAM_TIMEOUT),
            connector=aiohttp.TCPConnector(limit=64, force_close=True),
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    def stats(self) -> dict[str, float]:
        """What was forwarded, and the mean time a request spent in the proxy (ms)."""
        mean = 1000 * self.seconds / self.requests if self.requests else 0.0
        return {**self.counts, "mean_ms": round(mean, 1)}

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        upstreams = list(self._upstreams())
        if not upstreams:
            self.counts["no_replica"] += 1
            return web.Response(status=503, text="no replica is up")
        first = next(self._turn)
        self.requests += 1
        began = time.monotonic()
        try:
            return await self._try(request.method, request.path_qs, body, headers, upstreams, first)
        finally:
            self.seconds += time.monotonic() - began

    async def _try(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
        upstreams: list[str],
        first: int,
    ) -> web.Response:
        assert self._session is not None
        for offset in range(len(upstreams)):
            base = upstreams[(first + offset) % len(upstreams)]
            try:
                async with self._session.request(
                    method, base + path, data=body, headers=headers
                ) as answer:
                    payload = await answer.read()
                    self.counts[f"forwarded_{answer.status // 100}xx"] += 1
                    if answer.status >= 500 and len(self.errors) < 10:
                        self.errors.append(f"{answer.status} {payload[:300]!r}")
                    kept = {k: v for k, v in answer.headers.items() if k.lower() not in _DROPPED}
                    return web.Response(status=answer.status, body=payload, headers=kept)
            except aiohttp.ClientConnectorError:
                # Nobody listens there (killed, restarting): the next replica, as a Service does.
                self.counts["skipped_dead_replica"] += 1
                continue
            except (aiohttp.ClientError, TimeoutError):
                # The replica took the request and died (or hung): its answer is lost.
                self.counts["lost_mid_request"] += 1
                return web.Response(status=502, text="the replica did not answer")
        self.counts["no_replica"] += 1
        return web.Response(status=502, text="no replica accepted the connection")
