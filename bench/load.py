"""The load: escalation bodies, one POST, and the two ways of sending many (closed and open
loop), each request's schedule and answer kept."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from benchlib import API_KEY, summarize

__all__ = [
    "Load",
    "Send",
    "Sent",
    "closed_loop",
    "encoded_bodies",
    "escalation_body",
    "open_loop",
    "post_escalation",
]

_REASONS = ("billing_dispute", "technical_issue", "refund_request", "cancel_service", "general")
_SUMMARY = (
    "Customer says the March invoice charged the premium plan twice after a downgrade on the"
    " 3rd; the assistant confirmed two identical charges and could not issue the refund itself."
)


def escalation_body(tag: str, n: int) -> dict[str, Any]:
    """The body of the n-th escalation of a run: about 600 bytes of JSON."""
    return {
        "conversation_id": f"bench-{tag}-{n:06d}",
        "reason_code": _REASONS[n % len(_REASONS)],
        "summary": _SUMMARY,
        "channel": "chat",
        "customer": {"id": f"cust-{tag}-{n:06d}", "language": "en"},
        "context": {"order_id": f"ord-{n:08d}", "plan": "premium", "turns": 14},
    }


_HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def encoded_bodies(tag: str, count: int) -> list[bytes]:
    """`count` escalation bodies, serialised before the clock starts."""
    return [json.dumps(escalation_body(tag, n)).encode() for n in range(count)]


async def post_escalation(
    session: aiohttp.ClientSession, url: str, body: bytes
) -> tuple[str, str | None]:
    """POST one escalation; its answer's status (or exception name) and the id it names."""
    try:
        async with session.post(url, data=body, headers=_HEADERS) as answer:
            payload = await answer.read()
            status = str(answer.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__, None
    if status in ("200", "201"):
        match = re.search(rb'"id":\s*"([^"]+)"', payload)
        return status, match.group(1).decode() if match else None
    return status, None


# ---------------------------------------------------------------- load


@dataclass
class Sent:
    """One request of a load: when it was due, when its answer came, what it said."""

    n: int
    due: float  # perf_counter seconds: the schedule (open loop) or the send (closed loop)
    done: float
    done_wall: float  # time.time() at the answer, to compare with the simulator's clock
    status: str
    value: str | None


@dataclass
class Load:
    """A load's requests and the time it took."""

    sent: list[Sent] = field(default_factory=list)
    elapsed_s: float = 0.0

    def statuses(self) -> dict[str, int]:
        """Answers by status (or exception)."""
        return dict(Counter(s.status for s in self.sent))

    def ok(self, statuses: tuple[str, ...] = ("200", "201")) -> list[Sent]:
        """The requests answered with one of `statuses`."""
        return [s for s in self.sent if s.status in statuses]

    def summary(self, ok: tuple[str, ...] = ("200", "201")) -> dict[str, Any]:
        """Throughput of answers in `ok`, latency of all answers, errors by status."""
        good = len(self.ok(ok))
        return {
            "requests": len(self.sent),
            "ok": good,
            "errors": {k: v for k, v in self.statuses().items() if k not in ok},
            "elapsed_s": round(self.elapsed_s, 3),
            "per_second": round(good / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            **summarize(s.done - s.due for s in self.sent),
        }


Send = Callable[[int], Awaitable[tuple[str, str | None]]]


async def closed_loop(send: Send, *, concurrency: int, seconds: float, count: int) -> Load:
    """`concurrency` senders, each sending its next request when its last one is answered,
    until `count` requests or `seconds` have passed; latency from each request's send."""
    load = Load()
    numbers = itertools.count()
    started = time.perf_counter()
    deadline = started + seconds

    async def sender() -> None:
        while time.perf_counter() < deadline and (n := next(numbers)) < count:
            due = time.perf_counter()
            status, value = await send(n)
            load.sent.append(Sent(n, due, time.perf_counter(), time.time(), status, value))

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    load.elapsed_s = time.perf_counter() - started
    return load


async def open_loop(send: Send, *, rate: float, seconds: float, max_pending: int = 2000) -> Load:
    """Send `rate` requests a second on a fixed schedule for `seconds`, whatever the answers
    take (open loop), at most `max_pending` unanswered; latency from each request's scheduled
    time, so a stall delays the measure of every request due meanwhile (no coordinated
    omission)."""
    load = Load()
    count = round(rate * seconds)
    started = time.perf_counter() + 0.02
    pending: set[asyncio.Task[None]] = set()

    async def one(n: int, due: float) -> None:
        status, value = await send(n)
        load.sent.append(Sent(n, due, time.perf_counter(), time.time(), status, value))

    for n in range(count):
        due = started + n / rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        if len(pending) >= max_pending:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(one(n, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    load.elapsed_s = time.perf_counter() - started
    return load
