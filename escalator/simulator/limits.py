"""Twilio's REST rate limits: a token bucket per workspace and 3 EvaluateTaskAttributes/s.

What is modelled, and why:
- Twilio answers 429 with code 20429 ("Too Many Requests", safe to retry after backing off) and
  averages usage over 10 s. Its algorithm is not documented; a token bucket gives the same
  behaviour to a client: `burst` requests at once, then `rate` per second. The default burst is
  ten seconds' worth (`10 * rate`), so a client idle for 10 s may spend that budget at once, as
  a 10-s average allows. One bucket per workspace; requests outside a workspace
  (`/v1/Workspaces`) share an account-wide bucket. Off by default.
- `GET Tasks?EvaluateTaskAttributes=...` is limited to 3 requests per second per workspace
  (Twilio changelog, October 2024). Modelled as a sliding window: at most N such requests
  within any one second. On by default, as Twilio enforces it.
- `Retry-After` is not documented for TaskRouter; sending it is optional and off by default.
  When on, it carries the whole seconds until a request would pass.
Time is the real monotonic clock (not the simulator's virtual clock), because the limits
are about how fast a real client calls.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from escalator.simulator.errors import TwilioApiError

__all__ = ["DEFAULT_EVALUATE_PER_SECOND", "RateLimits", "limits_from_json"]

DEFAULT_EVALUATE_PER_SECOND = 3
_BURST_SECONDS = 10
_FIELDS = frozenset({"rate", "burst", "evaluate_per_second", "retry_after"})


class _Unset:
    """Marks a keyword argument that was not given."""


_UNSET = _Unset()


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimits:
    """The active limits and their per-workspace usage; `check` raises Twilio's 429."""

    rate: float | None = None
    burst: float | None = None
    evaluate_per_second: int | None = DEFAULT_EVALUATE_PER_SECOND
    retry_after: bool = False
    monotonic: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _evaluations: dict[str, deque[float]] = field(default_factory=dict)

    def configure(
        self,
        *,
        rate: float | _Unset | None = _UNSET,
        burst: float | _Unset | None = _UNSET,
        evaluate_per_second: int | _Unset | None = _UNSET,
        retry_after: bool | _Unset = _UNSET,
    ) -> None:
        """Change the given limits (None turns one off) and start every count afresh."""
        if not isinstance(rate, _Unset):
            self.rate = rate
        if not isinstance(burst, _Unset):
            self.burst = burst
        if not isinstance(evaluate_per_second, _Unset):
            self.evaluate_per_second = evaluate_per_second
        if not isinstance(retry_after, _Unset):
            self.retry_after = retry_after
        self._buckets.clear()
        self._evaluations.clear()

    @property
    def capacity(self) -> float | None:
        """The bucket size in effect: `burst`, else ten seconds' worth of `rate`."""
        if self.rate is None:
            return None
        return self.burst if self.burst is not None else self.rate * _BURST_SECONDS

    def check(self, workspace_sid: str, *, evaluates: bool = False) -> None:
        """Count one request; raise a 429 (code 20429) when a limit is exceeded."""
        if self.rate is None and not (evaluates and self.evaluate_per_second is not None):
            return
        now = self.monotonic()
        if evaluates and self.evaluate_per_second is not None:
            self._check_evaluations(workspace_sid, now, self.evaluate_per_second)
        if self.rate is not None:
            self._take_token(workspace_sid, now, self.rate)

    def to_json(self) -> dict[str, Any]:
        """The limits as the control API shows them."""
        return {
            "rate": self.rate,
            "burst": self.capacity,
            "evaluate_per_second": self.evaluate_per_second,
            "retry_after": self.retry_after,
        }

    def _take_token(self, key: str, now: float, rate: float) -> None:
        capacity = self.capacity or 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return
        raise self._too_many("Too Many Requests", (1 - bucket.tokens) / rate)

    def _check_evaluations(self, key: str, now: float, per_second: int) -> None:
        window = self._evaluations.setdefault(key, deque())
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= per_second:
            raise self._too_many(
                "Too Many Requests: EvaluateTaskAttributes is limited to"
                f" {per_second} requests per second per workspace",
                1.0 - (now - window[0]),
            )
        window.append(now)

    def _too_many(self, message: str, wait: float) -> TwilioApiError:
        headers = {"Retry-After": str(max(1, math.ceil(wait)))} if self.retry_after else {}
        return TwilioApiError(429, 20429, message, headers=headers)


def _optional_number(
    body: Mapping[str, Any], name: str, *, integer: bool = False, minimum: float = 0.0
) -> float | None:
    value = body[name]
    if value is None:
        return None
    kinds = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0 or value < minimum:
        kind = "an integer" if integer else "a number"
        bound = f">= {minimum:g}" if minimum else "> 0"
        raise ValueError(f"'{name}' must be {kind} {bound}, or null")
    return value


def limits_from_json(body: object) -> dict[str, Any]:
    """The `configure` keywords from the control API's JSON; ValueError names the bad field."""
    if not isinstance(body, Mapping):
        raise ValueError("the body must be a JSON object")
    unknown = set(body) - _FIELDS
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    changes: dict[str, Any] = {}
    if "rate" in body:
        changes["rate"] = _optional_number(body, "rate")
    if "burst" in body:
        changes["burst"] = _optional_number(body, "burst", minimum=1)
    if "evaluate_per_second" in body:
        changes["evaluate_per_second"] = _optional_number(body, "evaluate_per_second", integer=True)
    if "retry_after" in body:
        if not isinstance(body["retry_after"], bool):
            raise ValueError("'retry_after' must be true or false")
        changes["retry_after"] = body["retry_after"]
    return changes
