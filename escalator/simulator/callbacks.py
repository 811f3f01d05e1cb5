"""Event and assignment callbacks: signed as Twilio signs, sent in the background, with faults."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from escalator.simulator.events import EventRecord

__all__ = [
    "CallbackDispatcher",
    "CallbackFaults",
    "Delivery",
    "InstructionHandler",
    "callback_faults_from_json",
    "signature",
]

# Event callbacks: Twilio waits 15 s for the answer (Events reference, "Event Callbacks").
EVENT_TIMEOUT = 15.0
InstructionHandler = Callable[[str, str, Mapping[str, Any]], None]


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """`X-Twilio-Signature`: base64 HMAC-SHA1 of the URL then each name+value, sorted by name."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass
class CallbackFaults:
    """Probabilities of dropping, duplicating and delaying event callbacks; delayed ones may
    be sent after later ones (`reorder`)."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    reorder: bool = False
    delay_seconds: float = 0.05

    def to_json(self) -> dict[str, Any]:
        """The faults as the control API shows them."""
        return asdict(self)


def callback_faults_from_json(body: object) -> tuple[CallbackFaults, int | None]:
    """Faults and an optional new `seed` from control JSON; ValueError names the field."""
    if not isinstance(body, Mapping):
        raise ValueError("the body must be a JSON object")
    unknown = set(body) - {"drop", "duplicate", "delay", "reorder", "delay_seconds", "seed"}
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name in ("drop", "duplicate", "delay"):
        value = body.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"'{name}' must be a probability between 0 and 1")
        values[name] = float(value)
    reorder = body.get("reorder", False)
    if not isinstance(reorder, bool):
        raise ValueError("'reorder' must be true or false")
    delay_seconds = body.get("delay_seconds", 0.05)
    if isinstance(delay_seconds, bool) or not isinstance(delay_seconds, int | float):
        raise ValueError("'delay_seconds' must be a number of seconds")
    if not 0 <= delay_seconds <= 60:
        raise ValueError("'delay_seconds' must be between 0 and 60")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError("'seed' must be an integer")
    faults = CallbackFaults(reorder=reorder, delay_seconds=float(delay_seconds), **values)
    return faults, seed


@dataclass
class Delivery:
    """One callback request (or a dropped one), as the receiver saw it."""

    kind: str
    url: str
    params: dict[str, str]
    signature: str
    outcome: str = "queued"
    status: int | None = None
    answer: str | None = None
    event_sid: str | None = None

    @property
    def event_type(self) -> str | None:
        """The event callback's `EventType`."""
        return self.params.get("EventType")


@dataclass
class _Outgoing:
    delivery: Delivery
    delayed: bool = False


@dataclass
class CallbackDispatcher:
    """Sends callbacks from a queue on a background task, never blocking REST answers."""

    auth_token: str
    seed: int = 0
    assignment_timeout: float = 5.0
    faults: CallbackFaults = field(default_factory=CallbackFaults)
    deliveries: list[Delivery] = field(default_factory=list)
    instruction_handler: InstructionHandler | None = None
    _rng: random.Random = field(init=False)
    _queue: asyncio.Queue[_Outgoing] | None = field(default=None, init=False)
    _held: list[_Outgoing] = field(default_factory=list, init=False)
    _worker: asyncio.Task[None] | None = field(default=None, init=False)
    _assignments: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # Not for security: a seeded generator so fault runs replay exactly.
        self._rng = random.Random(self.seed)  # noqa: S311

    def set_faults(self, faults: CallbackFaults, *, seed: int | None = None) -> None:
        """Use `faults` from now on; a `seed` restarts the random choices."""
        self.faults = faults
        if seed is not None:
            self.seed = seed
            self._rng = random.Random(seed)  # noqa: S311

    def _start(self) -> asyncio.Queue[_Outgoing]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return self._queue

    def send_event(self, url: str, record: EventRecord) -> None:
        """Queue `record` for the workspace's EventCallbackUrl, applying the faults."""
        params = dict(record.fields)
        delivery = Delivery("event", url, params, signature(self.auth_token, url, params))
        delivery.event_sid = record.sid
        # Three draws per event whatever the probabilities, so a seed replays the same run.
        drop, duplicate, delay = (self._rng.random() for _ in range(3))
        if drop < self.faults.drop:
            delivery.outcome = "dropped"
            self.deliveries.append(delivery)
            return
        queue = self._start()
        copies = 2 if duplicate < self.faults.duplicate else 1
        for copy in range(copies):
            outgoing = (
                Delivery(**{**asdict(delivery), "params": dict(params)}) if copy else delivery
            )
            queue.put_nowait(_Outgoing(outgoing, delayed=delay < self.faults.delay))

    def send_request(self, kind: str, url: str, params: dict[str, str]) -> None:
        """Queue a signed POST that no callback fault applies to (a call's Enqueue action)."""
        delivery = Delivery(kind, url, dict(params), signature(self.auth_token, url, params))
        self._start().put_nowait(_Outgoing(delivery))

    async def _run(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            item = await queue.get()
            if item.delayed and self.faults.reorder:
                # Held back and sent after the next one: a reordering.
                self._held.append(item)
                if queue.empty():
                    await self._flush_held(queue)
                continue
            if item.delayed:
                await asyncio.sleep(self.faults.delay_seconds)
            await self._post_event(item.delivery)
            queue.task_done()
            await self._flush_held(queue)

    async def _flush_held(self, queue: asyncio.Queue[_Outgoing]) -> None:
        while self._held:
            await self._post_event(self._held.pop(0).delivery)
            queue.task_done()

    async def _post_event(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        # Twilio retries an event callback once when the connection fails.
        for _ in range(2):
            status, _ = await self._post(delivery, EVENT_TIMEOUT)
            if status is not None or delivery.outcome != "connect-failed":
                return

    async def _post(self, delivery: Delivery, deadline: float) -> tuple[int | None, str | None]:
        assert self._session is not None
        headers = {
            "X-Twilio-Signature": delivery.signature,
            "I-Twilio-Idempotency-Token": delivery.event_sid
            or delivery.params.get("ReservationSid", ""),
        }
        try:
            async with asyncio.timeout(deadline):
                async with self._session.post(
                    delivery.url, data=delivery.params, headers=headers
                ) as response:
                    delivery.status = response.status
                    delivery.answer = await response.text()
                    delivery.outcome = "delivered" if response.status < 400 else "failed"
                    return delivery.status, delivery.answer
        except TimeoutError:
            delivery.outcome = "timeout"
        except aiohttp.ClientConnectionError:
            delivery.outcome = "connect-failed"
        except aiohttp.ClientError:
            delivery.outcome = "failed"
        return None, None

    def send_assignment(
        self, workspace_sid: str, reservation_sid: str, urls: list[str], params: dict[str, str]
    ) -> None:
        """POST the assignment callback, then the fallback URL on error or after the deadline."""
        self._start()
        task = asyncio.get_running_loop().create_task(
            self._assign(workspace_sid, reservation_sid, urls, params)
        )
        self._assignments.add(task)
        task.add_done_callback(self._assignments.discard)

    async def _assign(
        self, workspace_sid: str, reservation_sid: str, urls: list[str], params: dict[str, str]
    ) -> None:
        for url in urls:
            delivery = Delivery("assignment", url, params, signature(self.auth_token, url, params))
            self.deliveries.append(delivery)
            status, answer = await self._post(delivery, self.assignment_timeout)
            if status is None or not 200 <= status < 300:
                continue
            # An empty 200 means the application will accept or reject over REST.
            if answer and answer.strip() and self.instruction_handler is not None:
                try:
                    instruction = json.loads(answer)
                except ValueError:
                    delivery.outcome = "invalid-answer"
                    return
                if isinstance(instruction, dict):
                    self.instruction_handler(workspace_sid, reservation_sid, instruction)
            return

    async def drain(self) -> None:
        """Wait until every queued callback and assignment callback has been sent."""
        while True:
            if self._queue is not None:
                await self._queue.join()
            pending = [t for t in self._assignments if not t.done()]
            if not pending:
                if self._queue is None or self._queue.empty():
                    return
                continue
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        """Stop sending and close the HTTP session."""
        tasks = [*self._assignments, *([self._worker] if self._worker else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._worker = None
        self._queue = None
        self._held.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
