"""A contact-centre supervisor, as a run needs one: every few seconds it notes how TaskRouter's
workspace looks (a timeline for the report) and puts back to work any worker left offline for
``grace`` seconds or more.

Escalator's timeout-cascade fix is what should put a worker back after a reservation timed out;
each worker the supervisor has to put back instead is counted, with what TaskRouter and the
service knew of that worker's last timed-out reservation, as evidence for the report: without
it, workers drain out of the pool and a long run never settles.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioException
from twilio.http.async_http_client import AsyncTwilioHttpClient

from tests.chaos.processes import Simulator
from tests.chaos.verify import sdk_client
from tests.chaos.waits import why_offline

__all__ = ["Supervisor"]

_EVIDENCE = 12


@dataclass
class Supervisor:
    """Samples the workspace every ``every`` s; puts back workers offline for ``grace`` s."""

    simulator: Simulator
    session: aiohttp.ClientSession
    service_url: Callable[[], str]
    since: datetime
    progress: Callable[[], int]
    grace: float = 15.0
    every: float = 2.5
    timeline: list[dict[str, Any]] = field(default_factory=list)
    put_back: int = 0
    evidence: list[str] = field(default_factory=list)
    _offline_since: dict[str, float] = field(default_factory=dict)

    async def run(self) -> None:
        """Until cancelled."""
        began = time.monotonic()
        async with AsyncTwilioHttpClient() as http:
            workspace = sdk_client(http, self.simulator.url).taskrouter.v1.workspaces(
                self.simulator.workspace_sid
            )
            activities = await workspace.activities.list_async()
            available = next(a.sid for a in activities if a.available)
            samples = 0
            while True:
                # A fault, a 429 or a slow simulator: the next turn.
                with contextlib.suppress(TwilioException, aiohttp.ClientError, TimeoutError):
                    await self._turn(workspace, available, began, record=samples % 2 == 0)
                samples += 1
                await asyncio.sleep(self.every)

    async def _turn(self, workspace: Any, available: str, began: float, *, record: bool) -> None:
        workers = await workspace.workers.list_async(page_size=100)
        now = time.monotonic()
        offline = {w.sid: w for w in workers if not w.available}
        for sid in list(self._offline_since):
            if sid not in offline:
                del self._offline_since[sid]
        for sid in offline:
            self._offline_since.setdefault(sid, now)
        if record:
            stats = await workspace.real_time_statistics().fetch_async()
            self.timeline.append(
                {
                    "t_s": round(now - began, 1),
                    "requests_done": self.progress(),
                    "tasks_by_status": stats.tasks_by_status,
                    "workers_offline": len(offline),
                }
            )
        for sid, since in list(self._offline_since.items()):
            if now - since < self.grace:
                continue
            if len(self.evidence) < _EVIDENCE:
                self.evidence.append(
                    await why_offline(
                        self.session, self.service_url(), workspace, offline[sid], self.since
                    )
                )
            await workspace.workers(sid).update_async(activity_sid=available)
            self.put_back += 1
            del self._offline_since[sid]
