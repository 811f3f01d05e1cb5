"""The simulator's time: a real clock on the event loop, or a virtual one tests move by hand."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "RealClock", "TimerHandle", "VirtualClock"]


class TimerHandle(Protocol):
    """A scheduled callback that can still be cancelled."""

    def cancel(self) -> None:
        """Do not run the callback."""


class Clock(Protocol):
    """Where the simulator reads the time and schedules its timeouts."""

    def now(self) -> datetime:
        """The current time, UTC."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` after `delay` seconds of this clock's time."""


class RealClock:
    """Wall-clock time; timers are the running event loop's."""

    def now(self) -> datetime:
        """The current time, UTC."""
        return datetime.now(UTC)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Schedule on the running loop."""
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)


@dataclass
class _VirtualTimer:
    due: datetime
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class VirtualClock:
    """Time that moves only when `advance` is called; due timers run in time order."""

    start: datetime = field(default_factory=lambda: datetime(2030, 1, 1, tzinfo=UTC))
    _now: datetime = field(init=False)
    _timers: list[tuple[datetime, int, _VirtualTimer]] = field(default_factory=list, init=False)
    _sequence: itertools.count[int] = field(default_factory=itertools.count, init=False)

    def __post_init__(self) -> None:
        self._now = self.start

    def now(self) -> datetime:
        """The virtual time, UTC."""
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Schedule `callback` at now + `delay` virtual seconds."""
        timer = _VirtualTimer(self._now + timedelta(seconds=max(0.0, delay)), callback)
        heapq.heappush(self._timers, (timer.due, next(self._sequence), timer))
        return timer

    @property
    def pending(self) -> int:
        """How many timers are scheduled and not cancelled."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    async def advance(self, seconds: float) -> None:
        """Move time forward, running every timer that falls due, those they schedule included."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        target = self._now + timedelta(seconds=seconds)
        while self._timers and self._timers[0][0] <= target:
            due, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, due)
            timer.callback()
            # Let tasks the callback started (callbacks, deliveries) take their first step.
            await asyncio.sleep(0)
        self._now = target
        await asyncio.sleep(0)
