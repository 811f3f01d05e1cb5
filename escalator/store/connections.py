"""What every part of ``SqlStore`` works through: its engines and transactions, declared once."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from escalator.domain.escalation import Escalation
from escalator.store.feed import ChangeFeed

__all__ = ["StoreConnections"]

Result = TypeVar("Result")


class StoreConnections:
    """The base of the store's parts (events, outbox, reporting, idempotency keys); ``SqlStore``
    provides each of these."""

    engine: AsyncEngine
    changes: ChangeFeed
    # SQLite only: a synchronous engine for transactions run whole on the writer thread.
    _thread_engine: Engine | None

    def _write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction (SQLite: the writer's turn, ``BEGIN IMMEDIATE``)."""
        raise NotImplementedError

    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A read transaction."""
        raise NotImplementedError

    async def _write_in_thread(self, work: Callable[[Connection], Result]) -> Result:
        """``work`` in one write transaction on the writer thread (SQLite)."""
        raise NotImplementedError

    async def _load(self, connection: AsyncConnection, where: Any) -> Escalation | None:
        """The escalation matching ``where``, with its history."""
        raise NotImplementedError
