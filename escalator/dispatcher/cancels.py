"""Client cancels carried to TaskRouter: cancel the task, or record why it could not be."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from escalator.domain.changes import cancel_not_applied, client_canceled
from escalator.domain.escalation import CANCEL_REQUESTED, Escalation, Outcome, Status
from escalator.domain.events import CANCEL_REASON
from escalator.domain.ids import TaskSid
from escalator.errors import PermanentTwilioError, TransientTwilioError
from escalator.logs import get_logger
from escalator.metrics import Metrics
from escalator.store import OutboxItem, Store
from escalator.taskrouter import TaskRouterClient

__all__ = ["TaskCancels"]

_log = get_logger(__name__)


def _nothing_to_cancel(escalation: Escalation, task_sid: TaskSid | None) -> bool:
    """Whether the row has nothing left to do: no task; or the client's cancel was settled
    already (refused, so the escalation follows its task); or the task is the ended
    escalation's own, which ended with it. Only an escalation that an earlier version canceled
    at once, without waiting for TaskRouter, still owes its own task's cancel."""
    if task_sid is None:
        return False  # a waiting cancel is settled: no task exists
    if not escalation.status.is_terminal:
        return not escalation.cancel_requested
    canceled_at_once = escalation.outcome is Outcome.CANCELED_BY_CLIENT and not any(
        entry.event == CANCEL_REQUESTED for entry in escalation.history
    )
    return task_sid == escalation.task_sid and not canceled_at_once


class TaskCancels:
    """Carries out ``cancel_task`` outbox rows through the twilio SDK."""

    def __init__(
        self,
        *,
        store: Store,
        taskrouter: TaskRouterClient,
        metrics: Metrics,
        owner: str,
        clock: Callable[[], datetime],
        retry: Callable[[OutboxItem, TransientTwilioError], Awaitable[None]],
    ) -> None:
        self._store = store
        self._taskrouter = taskrouter
        self._metrics = metrics
        self._owner = owner
        self._clock = clock
        self._retry = retry

    async def handle(self, item: OutboxItem) -> None:
        """Cancel the escalation's task with escalator's reason, then settle the client's cancel:
        ``canceled`` once TaskRouter canceled the task (or none exists), else recorded as not
        applied (a worker accepted first) and the escalation goes on following its task."""
        escalation = await self._store.get_escalation(item.escalation_id)
        if escalation is None:
            await self._done(item, "none")
            return
        payload = item.payload or {}
        try:
            task_sid = await self._task_of(item, escalation, payload.get("task_sid"))
            if _nothing_to_cancel(escalation, task_sid):
                await self._done(item, "none")
                return
            if task_sid is not None and escalation.status is Status.ASSIGNED:
                # Known accepted: TaskRouter would refuse the cancel.
                await self._not_applied(item, "a worker accepted the task first", None)
                return
            if task_sid is not None:
                await self._taskrouter.cancel_task(task_sid, reason=CANCEL_REASON)
        except TransientTwilioError as exc:
            await self._retry(item, exc)
            return
        except PermanentTwilioError as exc:
            # Assigned meanwhile (TaskRouter cancels only until then), or already gone.
            why = f"TaskRouter refused the cancel ({exc.status}, {exc.code}): {exc}"
            await self._not_applied(item, why, exc)
            return
        now = self._clock()

        def settle(current: Escalation) -> Escalation:
            if not current.cancel_requested:
                return current  # ended meanwhile, or the cancel of a task made after the end
            return client_canceled(current, now=now, task_sid=task_sid)

        await self._done(item, "done" if task_sid else "none", settle)

    async def _not_applied(
        self, item: OutboxItem, why: str, exc: PermanentTwilioError | None
    ) -> None:
        now = self._clock()

        def record(escalation: Escalation) -> Escalation:
            return cancel_not_applied(escalation, now=now, why=why[:300])

        if await self._store.record_outbox_result(item, owner=self._owner, change=record):
            self._metrics.task_cancels.labels(result="not_applied").inc()
            _log.warning(
                "task.cancel_not_applied",
                escalation_id=item.escalation_id,
                status=exc.status if exc else None,
                code=exc.code if exc else None,
            )

    async def _task_of(
        self, item: OutboxItem, escalation: Escalation, known: object
    ) -> TaskSid | None:
        if isinstance(known, str):
            return TaskSid(known)
        if escalation.task_sid is not None:
            return escalation.task_sid
        found = await self._taskrouter.find_tasks([item.escalation_id])
        return found.get(item.escalation_id)

    async def _done(
        self,
        item: OutboxItem,
        result: str,
        settle: Callable[[Escalation], Escalation] = lambda escalation: escalation,
    ) -> None:
        ended: list[Escalation] = []

        def change(escalation: Escalation) -> Escalation:
            after = settle(escalation)
            ended[:] = [after] if after.status.is_terminal and after is not escalation else []
            return after

        if not await self._store.record_outbox_result(item, owner=self._owner, change=change):
            return
        self._metrics.task_cancels.labels(result=result).inc()
        _log.info("task.canceled_for_client", escalation_id=item.escalation_id, result=result)
        for escalation in ended:
            self._metrics.finished(
                outcome=Outcome.CANCELED_BY_CLIENT.value, reason=escalation.metric_reason
            )
