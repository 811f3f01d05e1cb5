"""A database that goes away answers 503 with Retry-After, never 500 or an ack without a commit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.integration.conftest import ServiceFactory
from tests.integration.test_api import BODY


class TcpProxy:
    """Forwards a local port to PostgreSQL; ``cut()`` is the database becoming unreachable."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        await self._server.wait_closed()


@pytest.fixture
async def proxied_postgres(postgres_url: str) -> AsyncIterator[tuple[str, TcpProxy]]:
    parts = urlsplit(postgres_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await proxy.start()
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    yield urlunsplit(parts._replace(netloc=netloc)), proxy
    with contextlib.suppress(AssertionError, OSError):
        await proxy.cut()


async def test_an_unreachable_database_gives_503_and_no_ack(
    service_factory: ServiceFactory, proxied_postgres: tuple[str, TcpProxy]
) -> None:
    url, proxy = proxied_postgres
    service = await service_factory(database_url=url)
    assert (await service.post({**BODY, "conversation_id": "before"})).status == 201
    await proxy.cut()

    response = await service.post({**BODY, "conversation_id": "during"})
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    assert response.headers["Retry-After"].isdigit()
    assert (await service.client.get("/readyz")).status == 503
    assert (await service.client.get("/healthz")).status == 200
