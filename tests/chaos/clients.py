"""The AI agents of a run: each POSTs an escalation and retries until it is acknowledged.

Some send an ``Idempotency-Key`` (most do), some send the same key again after their answer, some
send two copies at once, some escalate a conversation that another agent has just escalated,
and a few cancel theirs. Every choice is drawn from the run's seed. An escalation is
*acknowledged* once any attempt got a 201 or a 200 with its id.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.chaos.processes import API_KEY

__all__ = ["Agents", "Intent", "plan_intents"]

_REASONS = (
    ("billing_dispute", 0.35),
    ("technical_issue", 0.3),
    ("general", 0.2),
    ("short_wait", 0.1),
    ("not_a_known_code", 0.05),
)
_SUMMARY = (
    "Customer disputes the second charge on the March invoice; the assistant confirmed two"
    " identical charges and cannot refund them itself."
)
_CHANNELS = ("chat", "sms", "whatsapp", "email")


@dataclass
class Intent:
    """One request an agent means to make (and, maybe, repeat)."""

    number: int
    conversation_id: str
    body: bytes
    key: str | None
    resend: bool = False
    concurrent_copy: bool = False
    cancel_after: float | None = None
    duplicate_of: int | None = None


def _body(rng: random.Random, conversation_id: str, number: int) -> bytes:
    reasons, weights = zip(*_REASONS, strict=True)
    body: dict[str, Any] = {
        "conversation_id": conversation_id,
        "reason_code": rng.choices(reasons, weights)[0],
        "summary": _SUMMARY,
        "channel": rng.choice(_CHANNELS),
        "customer": {"id": f"cust-{number:06d}", "language": rng.choice(("en", "es", "fr"))},
        "context": {"order_id": f"ord-{number:08d}", "attempt": number % 7},
    }
    return json.dumps(body).encode()


def plan_intents(count: int, rng: random.Random, tag: str) -> list[Intent]:
    """``count`` conversations, plus the repeats some agents make, in the order they start."""
    planned: list[tuple[float, Intent]] = []
    for number in range(count):
        conversation = f"chaos-{tag}-{number:06d}"
        keyed = rng.random() < 0.85
        intent = Intent(
            number=number,
            conversation_id=conversation,
            body=_body(rng, conversation, number),
            key=str(uuid.UUID(int=rng.getrandbits(128))) if keyed else None,
            resend=keyed and rng.random() < 0.15,
            concurrent_copy=keyed and rng.random() < 0.05,
            cancel_after=rng.uniform(0.0, 3.0) if rng.random() < 0.04 else None,
        )
        planned.append((float(number), intent))
        if rng.random() < 0.1:
            # Another agent (another key, or none) escalates the same conversation soon after.
            repeat = Intent(
                number=number,
                conversation_id=conversation,
                body=_body(rng, conversation, number),
                key=str(uuid.UUID(int=rng.getrandbits(128))) if rng.random() < 0.7 else None,
                duplicate_of=number,
            )
            planned.append((number + rng.uniform(0.5, 20.0), repeat))
    planned.sort(key=lambda pair: pair[0])
    return [intent for _, intent in planned]


@dataclass
class Agents:
    """Runs the intents against the replicas and records every answer."""

    urls: Callable[[], Sequence[str]]
    rng: random.Random
    give_up_after: float = 120.0
    acked: dict[str, str] = field(default_factory=dict)  # escalation id -> conversation id
    ids_by_key: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    ids_by_conversation: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    answers: Counter[str] = field(default_factory=Counter)
    cancels: Counter[str] = field(default_factory=Counter)
    canceled: set[str] = field(default_factory=set)
    unexpected: list[str] = field(default_factory=list)
    retries: int = 0
    replays: int = 0
    gave_up: int = 0
    finished: int = 0
    _session: aiohttp.ClientSession | None = None
    _stopping: bool = False

    async def run(self, intents: list[Intent], *, rate: float, concurrency: int) -> None:
        """Start the intents at ``rate`` per second, at most ``concurrency`` at a time."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10),
            connector=aiohttp.TCPConnector(limit=concurrency * 2),
        )
        gate = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()
        began = time.monotonic()
        try:
            for position, intent in enumerate(intents):
                await asyncio.sleep(max(0.0, began + position / rate - time.monotonic()))
                await gate.acquire()
                task = asyncio.create_task(self._agent(intent, gate))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.gather(*running)
        finally:
            await self._session.close()

    def stop(self) -> None:
        """Make the agents still retrying give up."""
        self._stopping = True

    async def _agent(self, intent: Intent, gate: asyncio.Semaphore) -> None:
        try:
            copies = 2 if intent.concurrent_copy else 1
            ids = await asyncio.gather(*(self._post(intent) for _ in range(copies)))
            escalation_id = next((i for i in ids if i), None)
            if escalation_id and intent.resend:
                self.replays += 1
                await self._post(intent)
            if escalation_id and intent.cancel_after is not None:
                await asyncio.sleep(intent.cancel_after)
                await self._cancel(escalation_id)
        finally:
            self.finished += 1
            gate.release()

    def _url(self, avoid: str | None) -> str:
        urls = list(self.urls())
        if avoid in urls and len(urls) > 1:
            urls.remove(avoid)
        return self.rng.choice(urls)

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(2.0, float(retry_after)) * self.rng.uniform(0.5, 1.0)
            except ValueError:
                pass
        return min(2.0, 0.05 * 2**attempt) * self.rng.uniform(0.5, 1.5)

    async def _post(self, intent: Intent) -> str | None:
        """POST until an answer with an id, or a final refusal; the id, or None."""
        assert self._session is not None
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        if intent.key is not None:
            headers["Idempotency-Key"] = intent.key
        deadline = time.monotonic() + self.give_up_after
        url: str | None = None
        for attempt in range(10_000):
            if attempt:
                self.retries += 1
            if time.monotonic() > deadline or self._stopping:
                self.gave_up += 1
                return None
            url = self._url(avoid=url)
            retry_after = None
            try:
                async with self._session.post(
                    f"{url}/escalations", data=intent.body, headers=headers
                ) as answer:
                    status, retry_after = answer.status, answer.headers.get("Retry-After")
                    text = await answer.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.answers[f"error:{type(exc).__name__}"] += 1
                await asyncio.sleep(self._backoff(attempt, None))
                continue
            self.answers[str(status)] += 1
            if status in (200, 201):
                escalation_id = str(json.loads(text)["id"])
                self._acknowledged(intent, escalation_id)
                return escalation_id
            if status in (409, 429) or status >= 500:
                await asyncio.sleep(self._backoff(attempt, retry_after))
                continue
            # A refusal retrying cannot fix: for these bodies, none is expected.
            self.unexpected.append(f"POST {intent.conversation_id}: {status} {text[:300]}")
            return None
        return None

    def _acknowledged(self, intent: Intent, escalation_id: str) -> None:
        self.acked.setdefault(escalation_id, intent.conversation_id)
        self.ids_by_conversation[intent.conversation_id].add(escalation_id)
        if intent.key is not None:
            self.ids_by_key[intent.key].add(escalation_id)

    async def _cancel(self, escalation_id: str) -> None:
        assert self._session is not None
        headers = {"Authorization": f"Bearer {API_KEY}"}
        url: str | None = None
        for attempt in range(200):
            if self._stopping:
                return
            url = self._url(avoid=url)
            try:
                async with self._session.post(
                    f"{url}/escalations/{escalation_id}/cancel", headers=headers
                ) as answer:
                    status, retry_after = answer.status, answer.headers.get("Retry-After")
                    text = await answer.text()
            except (aiohttp.ClientError, TimeoutError):
                self.cancels["error"] += 1
                await asyncio.sleep(self._backoff(attempt, None))
                continue
            self.cancels[str(status)] += 1
            if status == 200:
                self.canceled.add(escalation_id)
                return
            if status == 409:
                return  # already assigned or ended: a final answer
            if status >= 500 or status == 429:
                await asyncio.sleep(self._backoff(attempt, retry_after))
                continue
            self.unexpected.append(f"cancel {escalation_id}: {status} {text[:300]}")
            return

    def key_violations(self) -> dict[str, set[str]]:
        """Keys answered with more than one escalation id: an idempotency breach."""
        return {key: ids for key, ids in self.ids_by_key.items() if len(ids) > 1}
