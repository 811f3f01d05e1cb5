"""Spacing of rate-limited TaskRouter requests within one process: ``EvaluateTaskAttributes``.

Twilio allows 3 ``GET Tasks?EvaluateTaskAttributes=…`` requests per second per workspace
(changelog, October 2024) and does not say how it counts them. So requests are spaced evenly,
never sent in bursts: whether Twilio counts in fixed seconds, a sliding second or a bucket,
evenly spaced requests at the rate stay within it. The spacing is 5 % wider than the rate, so
that network jitter cannot bring a fourth request into the same second at Twilio's end.

Written here rather than taken from a library: none of the project's dependencies limits a
rate, and the usual asyncio limiters (aiolimiter's leaky bucket, for one) allow bursts, wait
without bound and know nothing of a 429's ``Retry-After``; this one needs all three, and a
clock that tests can drive.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

from escalator.errors import TransientTwilioError

__all__ = ["LookupDeferred", "RateLimiter"]

_JITTER_ALLOWANCE = 1.05


class LookupDeferred(TransientTwilioError):
    """The rate limit would hold this request longer than its caller can wait: not sent."""


class RateLimiter:
    """At most ``rate`` requests a second, spaced evenly; a 429 holds every request back."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self._interval = _JITTER_ALLOWANCE / rate
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf
        self._held_until = -math.inf

    @property
    def interval(self) -> float:
        """Seconds between two requests."""
        return self._interval

    async def acquire(self, *, max_wait: float = math.inf) -> float:
        """Wait for this request's turn; the seconds waited.

        Turns are handed out in call order. Raise ``LookupDeferred`` (with the wait as its
        ``retry_after``), without taking a turn, when the turn is more than ``max_wait`` away.
        """
        now = self._clock()
        turn = max(now, self._next, self._held_until)
        if turn - now > max_wait:
            raise LookupDeferred(
                f"lookup deferred: the rate limit has no turn for {turn - now:.2f} s",
                retry_after=turn - now,
            )
        self._next = turn + self._interval
        waited = 0.0
        # A 429 that arrives while we wait pushes the turn back (`hold_off`).
        while (wait := max(turn, self._held_until) - self._clock()) > 0:
            if waited + wait > max_wait:
                raise LookupDeferred(
                    f"lookup deferred: TaskRouter asked to wait {wait:.2f} s more",
                    retry_after=wait,
                )
            await self._sleep(wait)
            waited += wait
        # Held back past its turn by a 429: the next turn is spaced from when this one came.
        self._next = max(self._next, self._clock() + self._interval)
        return waited

    def hold_off(self, seconds: float) -> None:
        """TaskRouter answered 429: no request before ``seconds`` from now."""
        self._held_until = max(self._held_until, self._clock() + seconds)
        self._next = max(self._next, self._held_until)
