"""PostgreSQL LISTEN/NOTIFY: every replica hears at once what any replica committed.

Triggers (migrations 0005 and 0006) notify ``escalator_changes`` with the id of each escalation
saved and ``escalator_outbox`` when a side effect is owed that no dispatcher holds, at commit.
One dedicated connection per process listens: a change wakes the streams following that
escalation, an owed side effect wakes the dispatcher. Notifications sent while nobody listened
are lost, so after each (re)connection everything is woken once; the streams' and the
dispatcher's slow polls remain the safety net.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine

from escalator.domain.ids import EscalationId
from escalator.logs import get_logger
from escalator.metrics import Metrics
from escalator.store import Store
from escalator.store.feed import ChangeFeed
from escalator.store.sql import SqlStore

__all__ = [
    "CHANGES_CHANNEL",
    "OUTBOX_CHANNEL",
    "ChangeListener",
    "Connect",
    "ListenConnection",
    "change_listener",
    "connector",
]

CHANGES_CHANNEL = "escalator_changes"
OUTBOX_CHANNEL = "escalator_outbox"
_log = get_logger(__name__)
# What a connection that is lost or cannot be opened raises (asyncpg's own errors, a refused or
# reset socket, a timeout).
_DROPPED = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
# Options of SQLAlchemy's asyncpg dialect that its connect() consumes, not asyncpg.connect.
_DIALECT_ONLY = (
    "async_creator_fn",
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
)


class ListenConnection(Protocol):
    """What the listener uses of an asyncpg connection."""

    async def add_listener(self, channel: str, callback: Callable[..., None]) -> None: ...

    def add_termination_listener(self, callback: Callable[[Any], None]) -> None: ...

    def get_server_pid(self) -> int: ...

    async def fetchval(self, query: str) -> Any: ...

    def is_closed(self) -> bool: ...

    async def close(self) -> None: ...

    def terminate(self) -> None: ...


Connect = Callable[[], Awaitable[ListenConnection]]


def connector(engine: AsyncEngine, *, timeout: float = 5.0) -> Connect:
    """Opens asyncpg connections to ``engine``'s database, as its pool would, outside the pool."""
    # The dialect's own translation of the URL: any option the engine accepts (host lists,
    # ?ssl=...) means the same here, which a DSN string parsed by asyncpg would not promise.
    args, params = engine.dialect.create_connect_args(engine.url)
    for option in _DIALECT_ONLY:
        params.pop(option, None)
    params.setdefault("timeout", timeout)

    async def connect() -> ListenConnection:
        connection: ListenConnection = await asyncpg.connect(*args, **params)
        return connection

    return connect


class ChangeListener:
    """Listens on one dedicated connection: changes go to the feed, owed side effects to
    ``on_outbox``; connects again by itself, with backoff, when the connection is lost."""

    def __init__(
        self,
        *,
        connect: Connect,
        changes: ChangeFeed,
        metrics: Metrics,
        on_outbox: Callable[[], None] | None = None,
        ping_interval: float = 10.0,
        ping_timeout: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._connect = connect
        self._changes = changes
        self._metrics = metrics
        self._on_outbox = on_outbox
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._max_backoff = max_backoff
        self._stopping = asyncio.Event()
        self._listening = asyncio.Event()
        self._listened = False
        self._pid: int | None = None

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection; None while not listening."""
        return self._pid

    async def wait_listening(self) -> None:
        """Return once the listener is listening on both channels."""
        await self._listening.wait()

    def stop(self) -> None:
        """Ask ``run`` to close the connection and return."""
        self._stopping.set()

    async def run(self) -> None:
        """Listen until stopped. After a loss the next connection is tried at once; while
        connecting fails (the server restarts) each wait doubles, with jitter, up to
        ``max_backoff``."""
        failures = 0
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                await self.run_once()
            except _DROPPED as exc:
                failures += 1
                self._metrics.listener_failures.labels(kind="connect").inc()
                _log.warning("listener.connect_failed", error=type(exc).__name__, attempts=failures)
            except Exception:
                failures += 1
                self._metrics.listener_failures.labels(kind="internal").inc()
                _log.exception("listener.failed", attempts=failures)
            else:
                # A connection dropped soon after it opened counts as a failure: no hot loop.
                short = time.monotonic() - began < self._ping_interval
                failures = failures + 1 if short else 0
            if self._stopping.is_set():
                return
            ceiling = min(self._max_backoff, 0.05 * 2 ** min(failures, 20))
            await self._pause(random.uniform(ceiling / 2, ceiling))  # noqa: S311 - jitter

    async def run_once(self) -> None:
        """One connection's life: connect, LISTEN, wake everything once (what was sent while
        nobody listened is lost), deliver until the connection is lost or ``stop`` is called.
        Raises when it cannot connect or LISTEN."""
        connection = await self._connect()
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        try:
            await connection.add_listener(CHANGES_CHANNEL, self._changed)
            await connection.add_listener(OUTBOX_CHANNEL, self._owed)
            self._pid = connection.get_server_pid()
            if self._listened:
                self._metrics.listener_reconnects.inc()
            self._listened = True
            self._listening.set()
            _log.info("listener.listening", pid=self._pid)
            self._resync()
            await self._hold(connection, lost)
        finally:
            self._listening.clear()
            self._pid = None
            await _close(connection)

    async def _hold(self, connection: ListenConnection, lost: asyncio.Event) -> None:
        """Wait while the connection lives; a query now and then finds a connection that died
        silently (no FIN from a vanished host) and keeps it from an idle-session timeout."""
        while True:
            await _first_of(lost, self._stopping, within=self._ping_interval)
            if self._stopping.is_set():
                return
            if lost.is_set():
                break
            try:
                async with asyncio.timeout(self._ping_timeout):
                    await connection.fetchval("SELECT 1")
            except _DROPPED as exc:
                _log.warning("listener.ping_failed", error=type(exc).__name__)
                break
        self._metrics.listener_failures.labels(kind="lost").inc()
        _log.warning("listener.lost", pid=self._pid)

    def _changed(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self._metrics.notifications.labels(channel="changes").inc()
        _log.debug("listener.changed", escalation_id=payload)
        self._changes.publish(EscalationId(payload))

    def _owed(self, _connection: object, _pid: int, _channel: str, _payload: str) -> None:
        self._metrics.notifications.labels(channel="outbox").inc()
        if self._on_outbox is not None:
            self._on_outbox()

    def _resync(self) -> None:
        self._changes.publish_all()
        if self._on_outbox is not None:
            self._on_outbox()

    async def _pause(self, seconds: float) -> None:
        await _first_of(self._stopping, within=seconds)


def change_listener(
    store: Store, *, metrics: Metrics, on_outbox: Callable[[], None] | None = None
) -> ChangeListener | None:
    """The listener for ``store``'s database when it is PostgreSQL; None otherwise (SQLite is
    one process, whose in-process feed already sees every commit)."""
    if not isinstance(store, SqlStore) or store.engine.dialect.name != "postgresql":
        return None
    return ChangeListener(
        connect=connector(store.engine),
        changes=store.changes,
        metrics=metrics,
        on_outbox=on_outbox,
    )


async def _first_of(*events: asyncio.Event, within: float) -> None:
    """Return when one of ``events`` is set, or after ``within`` seconds."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _close(connection: ListenConnection) -> None:
    """Close the connection; one that cannot say goodbye (its server is gone) is dropped."""
    if connection.is_closed():
        return
    try:
        async with asyncio.timeout(2.0):
            await connection.close()
    except asyncio.CancelledError:
        connection.terminate()
        raise
    except Exception:
        connection.terminate()
        _log.debug("listener.close_failed")
