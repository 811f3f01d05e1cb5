"""TaskRouter's side of the chaos, through the simulator's control API (``/_sim/...``).

Each fault is added with a large ``times`` instead of none, so that what is left of it at the
end says how often it fired.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = ["FAULTS", "SimulatorControl"]

_TIMES = 1_000_000
# (label, fault): 5xx on creates, ambiguous creates (the task is made, the answer is lost by a
# reset or by hanging past the service's 3 s timeout), and errors on the calls that find tasks
# (lookups), re-read them (reconciler), cancel them and put workers back.
FAULTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("create 503", {"operation": "tasks.create", "status": 503, "probability": 0.06}),
    ("create 500", {"operation": "tasks.create", "status": 500, "probability": 0.02}),
    (
        "create ambiguous (reset after create)",
        {"operation": "tasks.create", "ambiguous": "reset", "probability": 0.06},
    ),
    (
        "create ambiguous (answer held 5 s)",
        {"operation": "tasks.create", "ambiguous": "hang", "hang": 5, "probability": 0.02},
    ),
    ("list/lookup 503", {"operation": "tasks.list", "status": 503, "probability": 0.05}),
    ("fetch 503", {"operation": "tasks.fetch", "status": 503, "probability": 0.05}),
    ("update (cancel) 503", {"operation": "tasks.update", "status": 503, "probability": 0.05}),
    (
        "update (cancel) ambiguous",
        {"operation": "tasks.update", "ambiguous": "reset", "probability": 0.03},
    ),
    ("worker update 503", {"operation": "workers.update", "status": 503, "probability": 0.05}),
)
OUTAGE = ("create outage (every create 503, 30 calls)", "tasks.create", 30)
CALLBACK_FAULTS = {"drop": 0.1, "duplicate": 0.1, "delay": 0.1, "reorder": True}
# A token bucket per workspace, sized from the agents' request rate (creates alone take a
# quarter of it), and every THROTTLE_EVERY seconds, THROTTLE_FOR seconds of a bucket that does
# not even fit the creates: 429s for every kind of call (creates, lookups, the reconciler's
# re-reads, worker resets), then room to recover. A bucket too tight for good starves the
# cascade fix's worker resets and the run collapses into a backlog that never drains.
STEADY_PER_REQUEST = 4.0
THROTTLED_PER_REQUEST = 0.5
THROTTLE_EVERY, THROTTLE_FOR = 25.0, 5.0


@dataclass
class SimulatorControl:
    """Adds, reads and clears the simulator's faults; remembers what it turned on."""

    url: str
    session: aiohttp.ClientSession
    fired: Counter[str] = field(default_factory=Counter)
    turned_on: list[str] = field(default_factory=list)
    _labels: dict[tuple[str, str], str] = field(default_factory=dict)
    _totals: dict[str, int] = field(default_factory=dict)
    _steady: dict[str, float] = field(default_factory=dict)
    _throttled: dict[str, float] = field(default_factory=dict)

    async def _call(self, method: str, path: str, body: object = None) -> Any:
        async with self.session.request(method, f"{self.url}/_sim{path}", json=body) as answer:
            if answer.status >= 400:
                raise RuntimeError(f"{method} /_sim{path}: {answer.status} {await answer.text()}")
            return await answer.json() if answer.status != 204 else None

    async def start(self, callback_seed: int, request_rate: float) -> None:
        """Every fault, the callback faults, and a rate limit for ``request_rate`` POSTs/s."""
        for label, fault in FAULTS:
            added = await self._call("POST", "/faults", {**fault, "times": _TIMES})
            self._labels[(added["operation"], _signature(added))] = label
            self._totals[label] = _TIMES
            self.turned_on.append(f"{label}: p={fault['probability']}")
        await self._call("POST", "/callbacks/faults", {**CALLBACK_FAULTS, "seed": callback_seed})
        self.turned_on.append(f"event callbacks: {CALLBACK_FAULTS}")
        self._steady = {"rate": STEADY_PER_REQUEST * request_rate, "burst": 2 * request_rate}
        self._throttled = {"rate": THROTTLED_PER_REQUEST * request_rate, "burst": 5}
        await self._call("POST", "/limits", self._steady)
        self.turned_on.append(
            f"rate limit (429, code 20429): {self._steady['rate']:g}/s, burst "
            f"{self._steady['burst']:g}; {THROTTLE_FOR:g} s of {self._throttled['rate']:g}/s, "
            f"burst {self._throttled['burst']} every {THROTTLE_EVERY:g} s; "
            "EvaluateTaskAttributes 3/s throughout"
        )

    async def throttle_windows(self) -> None:
        """Tighten the rate limit now and then, until cancelled (counted in ``fired``)."""
        while True:
            await asyncio.sleep(THROTTLE_EVERY - THROTTLE_FOR)
            await self._call("POST", "/limits", self._throttled)
            self.fired["rate-limit windows"] += 1
            await asyncio.sleep(THROTTLE_FOR)
            await self._call("POST", "/limits", self._steady)

    async def outage(self) -> None:
        """A short TaskRouter outage: the next creates all fail."""
        label, operation, times = OUTAGE
        added = await self._call(
            "POST", "/faults", {"operation": operation, "status": 503, "times": times}
        )
        self._labels[(added["operation"], _signature(added))] = label
        self._totals[label] = times
        self.turned_on.append(label)

    async def set_worker_policy(self, policy: dict[str, float]) -> None:
        """The default policy every simulated worker follows from now on."""
        await self._call("POST", "/workers/policy", policy)

    async def stop(self) -> None:
        """Read how often each fault fired, then clear every fault and limit."""
        remaining: dict[str, int] = {}
        for fault in (await self._call("GET", "/faults"))["faults"]:
            label = self._labels.get((fault["operation"], _signature(fault)))
            if label is not None:
                remaining[label] = int(fault["times"])
        for label, total in self._totals.items():
            # A fault used up is gone from the list: it fired every time.
            self.fired[label] = total - remaining.get(label, 0)
        await self._call("DELETE", "/faults")
        await self._call("POST", "/callbacks/faults", {})
        await self._call("POST", "/limits", {"rate": None, "burst": None})

    async def callback_outcomes(self) -> Counter[str]:
        """What happened to each event callback (delivered, dropped, failed, ...)."""
        deliveries = (await self._call("GET", "/callbacks/deliveries"))["deliveries"]
        return Counter(f"{d['kind']}:{d['outcome']}" for d in deliveries)


def _signature(fault: dict[str, Any]) -> str:
    return f"{fault.get('status')}|{fault.get('ambiguous')}|{fault.get('probability')}"
