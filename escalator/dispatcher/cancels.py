"""Client cancels carried to TaskRouter: cancel the task, or record why it could not be."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from escalator.domain.changes import cancel_not_applied
from escalator.domain.escalation import Escalation
from escalator.domain.events import CANCEL_REASON
from escalator.domain.ids import TaskSid
from escalator.errors import PermanentTwilioError, TransientTwilioError
from escalator.logs import get_logger
from escalator.metrics import Metrics
from escalator.store import OutboxItem, Store
from escalator.taskrouter import TaskRouterClient

__all__ = ["TaskCancels"]

_log = get_logger(__name__)


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
        """Cancel the escalation's task with escalator's reason; then drop the row."""
        payload = item.payload or {}
        try:
            task_sid = await self._task_of(item, payload.get("task_sid"))
            if task_sid is None:
                # The create that was in flight at cancel time made no task.
                await self._done(item, "none")
                return
            await self._taskrouter.cancel_task(task_sid, reason=CANCEL_REASON)
        except TransientTwilioError as exc:
            await self._retry(item, exc)
            return
        except PermanentTwilioError as exc:
            # Assigned meanwhile (TaskRouter cancels only until then), or already gone.
            why = f"TaskRouter refused the cancel ({exc.status}, {exc.code}): {exc}"[:300]
            now = self._clock()

            def record(escalation: Escalation) -> Escalation:
                return cancel_not_applied(escalation, now=now, why=why)

            if await self._store.record_outbox_result(item, owner=self._owner, change=record):
                self._metrics.task_cancels.labels(result="not_applied").inc()
                _log.warning(
                    "task.cancel_not_applied",
                    escalation_id=item.escalation_id,
                    status=exc.status,
                    code=exc.code,
                )
            return
        await self._done(item, "done")

    async def _task_of(self, item: OutboxItem, known: object) -> TaskSid | None:
        if isinstance(known, str):
            return TaskSid(known)
        found = await self._taskrouter.find_tasks([item.escalation_id])
        return found.get(item.escalation_id)

    async def _done(self, item: OutboxItem, result: str) -> None:
        if await self._store.drop_outbox(item, owner=self._owner):
            self._metrics.task_cancels.labels(result=result).inc()
            _log.info("task.canceled_for_client", escalation_id=item.escalation_id, result=result)
