"""Escalations the store committed or read lately, reused while the row's version says so.

A TaskRouter event needs its escalation with the whole history, and a task's events come in
quick succession: reading and decoding that history again for each one was a fifth of what an
event cost. An escalation is immutable and its ``version`` goes up with every change, whoever
makes it (another replica, another path of this one): a cached escalation is used only when the
row just read has the same version, so a stale entry is never used, only replaced. Entries go
in only once committed (a rolled-back batch's versions could be reused by another writer).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from escalator.domain.escalation import Escalation

__all__ = ["RecentEscalations"]


class RecentEscalations:
    """The ``size`` escalations used last, by id. Thread-safe: SQLite's writer thread reads it
    while the event loop may fill it."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, Escalation] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, escalation_id: str, version: int) -> Escalation | None:
        """The escalation as committed at ``version``, if it is here."""
        with self._lock:
            found = self._items.get(escalation_id)
            if found is None or found.version != version:
                return None
            self._items.move_to_end(escalation_id)
            return found

    def remember(self, committed: Iterable[Escalation]) -> None:
        """Keep these committed states, forgetting the least recently used beyond ``size``."""
        with self._lock:
            for escalation in committed:
                self._items[escalation.id] = escalation
                self._items.move_to_end(escalation.id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
