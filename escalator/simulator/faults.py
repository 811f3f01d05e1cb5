"""Fault injection: make chosen operations fail, slow down or lose their answer, seeded."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from aiohttp import web

from escalator.simulator.errors import TwilioApiError

__all__ = [
    "ANY_OPERATION",
    "NO_FAULT",
    "Ambiguity",
    "Fault",
    "FaultInjector",
    "Plan",
    "fault_from_json",
    "lose_answer",
]

ANY_OPERATION = "*"
# Twilio's codes for these statuses; 401 is 20003 ("Authenticate"), 429 is 20429.
_DEFAULT_CODES = {401: 20003, 429: 20429}
_AMBIGUITIES = ("reset", "hang")
_HANG_POLL = 0.05

Ambiguity = Literal["reset", "hang"]


@dataclass
class Fault:
    """What happens to calls of `operation` (e.g. `tasks.create`, or `*`).

    `status` answers an error instead of running the handler; `ambiguous` runs the handler (the
    resource IS created) and then loses the answer: `reset` aborts the connection, `hang` holds
    the answer `hang` seconds. `latency` (or a uniform draw in `[latency, latency_max]`) is
    waited first. A matching call fires the fault with `probability` (None: always), drawn
    from the simulator's seeded generator; the fault is spent after firing `times` times
    (None: never, which with a probability makes an error rate).
    """

    operation: str
    status: int | None = 503
    times: int | None = 1
    code: int | None = None
    message: str | None = None
    retry_after: float | None = None
    latency: float = 0.0
    latency_max: float | None = None
    probability: float | None = None
    ambiguous: Ambiguity | None = None
    hang: float = 0.0

    def __post_init__(self) -> None:
        if self.ambiguous is not None:
            # The handler runs and answers: there is no error status to send.
            self.status = None

    @property
    def decides_outcome(self) -> bool:
        """Whether it changes the answer (an error or a lost answer), not only its timing."""
        return self.status is not None or self.ambiguous is not None

    def error(self) -> TwilioApiError | None:
        """The error this fault answers with, or None when the handler runs."""
        if self.status is None or self.ambiguous is not None:
            return None
        code = self.code or _DEFAULT_CODES.get(self.status, 20000 + self.status)
        message = self.message or f"Simulated fault: HTTP {self.status}"
        headers = {}
        if self.retry_after is not None:
            retry = self.retry_after
            headers["Retry-After"] = str(int(retry)) if float(retry).is_integer() else str(retry)
        return TwilioApiError(self.status, code, message, headers=headers)

    def to_json(self) -> dict[str, Any]:
        """The fault as the control API shows it."""
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """What the faults decided for one call: wait, then answer an error or lose the answer."""

    latency: float = 0.0
    error: TwilioApiError | None = None
    ambiguous: Ambiguity | None = None
    hang: float = 0.0


NO_FAULT = Plan()


@dataclass
class FaultInjector:
    """The active faults, in the order they were added, and the generator they draw from."""

    _faults: list[Fault] = field(default_factory=list)
    # Not for security: a seeded generator so a run with error rates replays exactly.
    _random: random.Random = field(default_factory=lambda: random.Random(0))  # noqa: S311

    def seed(self, seed: int) -> None:
        """Restart the random draws from `seed`."""
        self._random.seed(seed)

    def add(self, fault: Fault) -> Fault:
        """Activate `fault`."""
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault."""
        self._faults.clear()

    @property
    def active(self) -> tuple[Fault, ...]:
        """The faults not yet used up."""
        return tuple(self._faults)

    def plan(self, operation: str) -> Plan:
        """Decide this call's fate, consuming one use of each fault that fires.

        Latency-only faults add up; of the faults deciding the outcome, the first that fires
        wins and the later ones are left untouched for the next call.
        """
        if not self._faults:
            return NO_FAULT
        latency = 0.0
        outcome: Fault | None = None
        for fault in list(self._faults):
            if fault.operation not in (operation, ANY_OPERATION):
                continue
            if outcome is not None and fault.decides_outcome:
                continue
            if fault.probability is not None and self._random.random() >= fault.probability:
                continue
            self._use(fault)
            latency += self._latency(fault)
            if fault.decides_outcome:
                outcome = fault
        if outcome is None:
            return Plan(latency) if latency else NO_FAULT
        return Plan(latency, outcome.error(), outcome.ambiguous, outcome.hang)

    def _use(self, fault: Fault) -> None:
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)

    def _latency(self, fault: Fault) -> float:
        if fault.latency_max is None:
            return fault.latency
        return self._random.uniform(fault.latency, fault.latency_max)


async def lose_answer(request: web.Request, plan: Plan) -> None:
    """After the handler ran: reset the connection, or hold the answer `plan.hang` seconds."""
    transport = request.transport
    if transport is None:
        return
    if plan.ambiguous == "reset":
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0: closing sends a TCP RST, the "connection reset by peer" clients see.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + plan.hang
    # Stop holding once the client gave up, so shutdown does not wait on a dead connection;
    # aiohttp offers no event for a lost connection, hence the polling.
    while (remaining := deadline - loop.time()) > 0 and not transport.is_closing():  # noqa: ASYNC110
        await asyncio.sleep(min(_HANG_POLL, remaining))


def _number(body: Mapping[str, Any], name: str, *, minimum: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ValueError(f"'{name}' must be a number >= {minimum}")
    return float(value)


def _integer(body: Mapping[str, Any], name: str, *, minimum: int, maximum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"'{name}' must be an integer between {minimum} and {maximum}")
    return value


def _ambiguity(body: Mapping[str, Any]) -> Ambiguity | None:
    value = body.get("ambiguous")
    if value is None:
        return None
    if value == "reset":
        return "reset"
    if value == "hang":
        return "hang"
    raise ValueError(f"'ambiguous' must be one of {', '.join(_AMBIGUITIES)}")


def fault_from_json(body: object) -> Fault:
    """Build a fault from the control API's JSON body; raise ValueError naming the bad field."""
    if not isinstance(body, Mapping):
        raise ValueError("the body must be a JSON object")
    unknown = set(body) - set(Fault.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    operation = body.get("operation")
    if not isinstance(operation, str) or not operation:
        raise ValueError("'operation' is required, e.g. 'tasks.create' or '*'")
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        raise ValueError("'message' must be a string")
    ambiguous = _ambiguity(body)
    if "status" in body:
        status = _integer(body, "status", minimum=400, maximum=599)
        if ambiguous and status is not None:
            raise ValueError("an 'ambiguous' fault runs the handler: it takes no 'status'")
    else:
        status = None if ambiguous else 503
    latency = _number(body, "latency", minimum=0) or 0.0
    latency_max = _number(body, "latency_max", minimum=latency)
    if status is None and ambiguous is None and latency == 0 and not latency_max:
        raise ValueError("a fault needs a 'status', an 'ambiguous' or a 'latency'")
    probability = _number(body, "probability", minimum=0)
    if probability is not None and probability > 1:
        raise ValueError("'probability' must be between 0 and 1")
    hang = _number(body, "hang", minimum=0) or 0.0
    if ambiguous == "hang" and hang == 0:
        raise ValueError("a 'hang' fault needs 'hang' seconds > 0")
    return Fault(
        operation=operation,
        status=status,
        times=_integer(body, "times", minimum=1, maximum=1_000_000) if "times" in body else 1,
        code=_integer(body, "code", minimum=1, maximum=99_999),
        message=message,
        retry_after=_number(body, "retry_after", minimum=0),
        latency=latency,
        latency_max=latency_max,
        probability=probability,
        ambiguous=ambiguous,
        hang=hang,
    )
