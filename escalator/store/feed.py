"""Notice of changed escalations, so that the streams following them wake at once.

The store publishes what this process commits; on PostgreSQL the change listener
(``store/notify.py``) publishes what every replica commits. A stream also polls the store,
slowly, as a safety net for a notification lost with the listener's connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from escalator.domain.ids import EscalationId

__all__ = ["ChangeFeed"]


class ChangeFeed:
    """A pub/sub of escalation ids: the store publishes after each commit, streams subscribe."""

    def __init__(self) -> None:
        self._waiters: dict[EscalationId, set[asyncio.Event]] = {}

    def publish(self, escalation_id: EscalationId) -> None:
        """Wake every subscriber of ``escalation_id``."""
        for waiter in self._waiters.get(escalation_id, ()):
            waiter.set()

    def publish_all(self) -> None:
        """Wake every subscriber: any escalation may have changed unseen (notifications were
        lost with the listener's connection)."""
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()

    @contextmanager
    def subscribe(self, escalation_id: EscalationId) -> Iterator[asyncio.Event]:
        """An event set whenever ``escalation_id`` changes; clear it before each read."""
        waiter = asyncio.Event()
        self._waiters.setdefault(escalation_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            waiters = self._waiters.get(escalation_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[escalation_id]

    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return sum(len(waiters) for waiters in self._waiters.values())
