"""The timeout cascade fix: put a worker whose reservation timed out back to work, once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from escalator.domain.effects import WorkerReset
from escalator.errors import PermanentTwilioError, TransientTwilioError
from escalator.logs import get_logger
from escalator.metrics import Metrics
from escalator.store import OutboxItem, Store
from escalator.taskrouter import TaskRouterClient

__all__ = ["WorkerResets"]

_log = get_logger(__name__)


class WorkerResets:
    """Carries out ``reset_worker`` outbox rows through the twilio SDK."""

    def __init__(
        self,
        *,
        store: Store,
        taskrouter: TaskRouterClient,
        metrics: Metrics,
        owner: str,
        retry: Callable[[OutboxItem, TransientTwilioError], Awaitable[None]],
    ) -> None:
        self._store = store
        self._taskrouter = taskrouter
        self._metrics = metrics
        self._owner = owner
        self._retry = retry

    async def handle(self, item: OutboxItem) -> None:
        """Reset the worker unless they chose another activity meanwhile; then drop the row."""
        reset = WorkerReset.from_payload(item.payload or {})
        try:
            result = await self._reset(reset)
        except TransientTwilioError as exc:
            await self._retry(item, exc)
            return
        except PermanentTwilioError as exc:
            # The worker or the activity is gone: nothing retrying could change.
            result = "refused"
            _log.warning(
                "worker.reset_refused",
                worker_sid=reset.worker_sid,
                status=exc.status,
                code=exc.code,
            )
        if await self._store.drop_outbox(item, owner=self._owner):
            self._metrics.worker_resets.labels(result=result).inc()
            _log.info(
                "worker.reset" if result == "done" else "worker.reset_skipped",
                worker_sid=reset.worker_sid,
                reservation_sid=reset.reservation_sid,
                escalation_id=item.escalation_id,
                result=result,
            )

    async def _reset(self, reset: WorkerReset) -> str:
        # TaskRouter moved the worker into the workspace's TimeoutActivitySid when the
        # reservation timed out; a worker found elsewhere chose another activity since (or
        # this row ran already): leave them alone.
        timeout_activity = await self._taskrouter.timeout_activity_sid()
        current = await self._taskrouter.worker_activity_sid(reset.worker_sid)
        if timeout_activity is None or current != timeout_activity:
            return "skipped"
        target = await self._taskrouter.activity_sid(reset.activity)
        if current == target:
            return "skipped"
        await self._taskrouter.set_worker_activity(reset.worker_sid, target)
        return "done"
