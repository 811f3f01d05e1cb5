"""Fault injection: make chosen operations fail or slow down, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from escalator.simulator.errors import TwilioApiError

__all__ = ["ANY_OPERATION", "Fault", "FaultInjector", "fault_from_json"]

ANY_OPERATION = "*"
# Twilio's codes for these statuses; 401 is 20003 ("Authenticate"), 429 is 20429.
_DEFAULT_CODES = {401: 20003, 429: 20429}


@dataclass
class Fault:
    """The next `times` calls of `operation` (e.g. `tasks.create`, or `*`) fail or wait."""

    operation: str
    status: int | None = 503
    times: int | None = 1
    code: int | None = None
    message: str | None = None
    retry_after: float | None = None
    latency: float = 0.0

    def error(self) -> TwilioApiError | None:
        """The error this fault answers with, or None for a latency-only fault."""
        if self.status is None:
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


@dataclass
class FaultInjector:
    """The active faults, consumed in the order they were added."""

    _faults: list[Fault] = field(default_factory=list)

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

    def take(self, operation: str) -> Fault | None:
        """Consume one use of the first fault matching `operation`, if any."""
        for fault in self._faults:
            if fault.operation in (operation, ANY_OPERATION):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                return fault
        return None


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
    status = _integer(body, "status", minimum=400, maximum=599) if "status" in body else 503
    latency = _number(body, "latency", minimum=0) or 0.0
    if status is None and latency == 0:
        raise ValueError("a fault needs a 'status' or a 'latency'")
    return Fault(
        operation=operation,
        status=status,
        times=_integer(body, "times", minimum=1, maximum=1_000_000) if "times" in body else 1,
        code=_integer(body, "code", minimum=1, maximum=99_999),
        message=message,
        retry_after=_number(body, "retry_after", minimum=0),
        latency=latency,
    )
