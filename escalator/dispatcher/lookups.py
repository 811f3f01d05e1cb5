"""Find before create, batched: escalation ids looked up together, a request at a time."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Collection
from dataclasses import dataclass

from escalator.domain.ids import EscalationId, TaskSid
from escalator.errors import PermanentTwilioError, TransientTwilioError, TwilioError
from escalator.logs import get_logger
from escalator.metrics import Metrics
from escalator.taskrouter import TaskRouterClient
from escalator.taskrouter.ratelimit import LookupDeferred

__all__ = ["Lookup", "TaskLookups"]

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What looking for one escalation's task came to: its tasks, oldest first, or the error."""

    tasks: tuple[TaskSid, ...] = ()
    error: TwilioError | None = None


class TaskLookups:
    """Looks escalations' tasks up by escalation id, many ids to an EvaluateTaskAttributes
    request, one request at a time: ids asked for while a request is on its way (or waiting
    for its rate-limit turn) go out together in the next one."""

    def __init__(self, *, taskrouter: TaskRouterClient, metrics: Metrics) -> None:
        self._taskrouter = taskrouter
        self._metrics = metrics
        self._pending: dict[EscalationId, list[asyncio.Future[Lookup]]] = {}
        self._turn = asyncio.Lock()

    async def find(
        self, escalation_ids: Collection[EscalationId], *, max_wait: float = math.inf
    ) -> dict[EscalationId, Lookup]:
        """What was found for each id (an error for the ids whose request failed); a request
        whose rate-limit turn is more than ``max_wait`` away is not sent (``LookupDeferred``)."""
        loop = asyncio.get_running_loop()
        mine: dict[EscalationId, asyncio.Future[Lookup]] = {}
        for escalation_id in dict.fromkeys(escalation_ids):
            future = mine[escalation_id] = loop.create_future()
            self._pending.setdefault(escalation_id, []).append(future)
        try:
            # Whoever holds the turn sends what is pending, ours among it, until ours is done.
            async with self._turn:
                while not all(future.done() for future in mine.values()):
                    await self._send(max_wait)
            return {escalation_id: future.result() for escalation_id, future in mine.items()}
        finally:
            for escalation_id, future in mine.items():
                if not future.done():
                    future.cancel()
                    self._forget(escalation_id, future)

    def _forget(self, escalation_id: EscalationId, future: asyncio.Future[Lookup]) -> None:
        waiting = self._pending.get(escalation_id, [])
        if future in waiting:
            waiting.remove(future)
        if not waiting:
            self._pending.pop(escalation_id, None)

    async def _send(self, max_wait: float) -> None:
        deferred: LookupDeferred | None = None
        try:
            # The ids are taken once the turn has come: those asked for meanwhile go too.
            turn_waited = await self._taskrouter.lookup_turn(max_wait=max_wait)
        except LookupDeferred as exc:
            deferred, turn_waited = exc, 0.0
        batch = list(self._pending)[: self._taskrouter.lookup_ids_per_request]
        waiting = {escalation_id: self._pending.pop(escalation_id) for escalation_id in batch}
        self._metrics.task_lookup_batch_size.observe(len(batch))
        try:
            if deferred is not None:
                raise deferred
            found = await self._taskrouter.look_up_tasks(
                batch, max_wait=max_wait - turn_waited, turn_taken=True
            )
        except TwilioError as exc:
            self._failed(batch, exc)
            results = {escalation_id: Lookup(error=exc) for escalation_id in batch}
        except BaseException:
            # Our caller was canceled mid-request: the others' ids go out with the next one.
            for escalation_id, futures in waiting.items():
                self._pending.setdefault(escalation_id, []).extend(futures)
            raise
        else:
            self._metrics.task_lookup_requests.labels(result="ok").inc(found.requests)
            waited = turn_waited + found.waited
            if waited > 0:
                self._metrics.task_lookup_rate_limit_waits.observe(waited)
            results = {
                escalation_id: self._found(escalation_id, found.tasks.get(escalation_id, ()))
                for escalation_id in batch
            }
            _log.info(
                "task.lookup",
                ids=len(batch),
                found=len(found.tasks),
                requests=found.requests,
                waited=round(waited, 3),
            )
        for escalation_id, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(results[escalation_id])

    def _found(self, escalation_id: EscalationId, tasks: tuple[TaskSid, ...]) -> Lookup:
        if len(tasks) > 1:
            # Should never happen: the oldest is adopted; nothing is deleted.
            self._metrics.task_lookups.labels(result="multiple").inc()
            self._metrics.duplicate_tasks.inc(len(tasks) - 1)
            _log.error("task.duplicates_found", escalation_id=escalation_id, task_sids=tasks)
        else:
            result = "found" if tasks else "not_found"
            self._metrics.task_lookups.labels(result=result).inc()
        return Lookup(tasks=tasks)

    def _failed(self, batch: list[EscalationId], exc: TwilioError) -> None:
        if isinstance(exc, LookupDeferred):
            result, request = "deferred", None
        elif isinstance(exc, PermanentTwilioError):
            result, request = "rejected", "rejected"
            self._metrics.twilio_rejects.labels(
                operation="lookup", code=str(exc.code or exc.status or "none")
            ).inc()
            _log.error("task.lookup_refused", ids=len(batch), status=exc.status, code=exc.code)
        else:
            result = "transient_error"
            throttled = isinstance(exc, TransientTwilioError) and exc.status == 429
            request = "throttled" if throttled else "failed"
            _log.warning("task.lookup_failed", ids=len(batch), status=exc.status, code=exc.code)
        self._metrics.task_lookups.labels(result=result).inc(len(batch))
        if request is not None:
            self._metrics.task_lookup_requests.labels(result=request).inc()
