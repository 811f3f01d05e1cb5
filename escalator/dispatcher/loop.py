"""The dispatcher's loop: leases due outbox rows and carries each out by its kind."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from escalator.dispatcher.callbacks import StatusCallbacks
from escalator.dispatcher.cancels import TaskCancels
from escalator.dispatcher.resets import WorkerResets
from escalator.domain.attributes import encode_attributes, task_channel
from escalator.domain.escalation import (
    Escalation,
    Outcome,
    TwilioFailure,
    task_attached,
    task_refused,
)
from escalator.domain.ids import TaskSid
from escalator.errors import PermanentTwilioError, StoreUnavailable, TransientTwilioError
from escalator.logs import get_logger
from escalator.metrics import Metrics
from escalator.store import (
    CANCEL_TASK,
    CREATE_TASK,
    OUTBOX_KINDS,
    RESET_WORKER,
    STATUS_CALLBACK,
    OutboxItem,
    Store,
)
from escalator.taskrouter import TaskRouterClient

__all__ = ["Clock", "Dispatcher"]

Clock = Callable[[], datetime]
_log = get_logger(__name__)


class Dispatcher:
    """Leases due outbox rows: finds or creates each escalation's task exactly once, and
    puts timed-out workers back to work."""

    def __init__(
        self,
        *,
        store: Store,
        taskrouter: TaskRouterClient,
        workflow_sid: str,
        clock: Clock,
        metrics: Metrics,
        owner: str,
        batch: int = 20,
        lease_seconds: float = 30.0,
        interval: float = 0.5,
        max_backoff: float = 60.0,
        attempts_per_lease: int = 3,
        call_timeout: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        callbacks: StatusCallbacks | None = None,
    ) -> None:
        self._store = store
        self._taskrouter = taskrouter
        self._workflow_sid = workflow_sid
        self._clock = clock
        self._metrics = metrics
        self._owner = owner
        self._batch = batch
        self._lease = timedelta(seconds=lease_seconds)
        self._interval = interval
        self._max_backoff = max_backoff
        self._attempts = attempts_per_lease
        # A find and a create may each take `call_timeout`; the next attempt only starts when
        # both still end well before the lease does, or another replica could take the row
        # while our request is in flight and create a second task.
        self._budget = max(0.0, lease_seconds - 2 * call_timeout - 1.0)
        self._sleep = sleep
        self._jitter = wait_random_exponential(multiplier=0.2, max=5)
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._resets = WorkerResets(
            store=store,
            taskrouter=taskrouter,
            metrics=metrics,
            owner=owner,
            retry=self._give_back,
        )
        self._cancels = TaskCancels(
            store=store,
            taskrouter=taskrouter,
            metrics=metrics,
            owner=owner,
            clock=clock,
            retry=self._give_back,
        )
        self._callbacks = callbacks
        # Without a sender, status callback rows are left to a replica that has one.
        self._kinds = OUTBOX_KINDS if callbacks else OUTBOX_KINDS - {STATUS_CALLBACK}

    def wake(self) -> None:
        """Look for work now instead of at the next interval (a new escalation was committed)."""
        self._wakeup.set()

    def stop(self) -> None:
        """Ask ``run`` to return after the current turn."""
        self._stopping.set()
        self._wakeup.set()

    async def run(self) -> None:
        """Dispatch until stopped; a busy turn is followed at once by another."""
        while not self._stopping.is_set():
            try:
                handled = await self.run_once()
            except StoreUnavailable:
                self._metrics.store_unavailable.labels(where="dispatcher").inc()
                _log.warning("dispatcher.store_unavailable")
                handled = 0
            except Exception:
                # The loop must outlive any bug: leased rows come back when their lease expires.
                self._metrics.dispatcher_errors.inc()
                _log.exception("dispatcher.turn_failed")
                handled = 0
            if handled >= self._batch:
                continue
            try:
                async with asyncio.timeout(self._interval):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
            self._wakeup.clear()

    async def run_once(self) -> int:
        """Lease one batch of due rows and handle them concurrently; how many were leased."""
        items = await self._store.lease_outbox(
            owner=self._owner,
            now=self._clock(),
            lease_for=self._lease,
            limit=self._batch,
            kinds=self._kinds,
        )
        results = await asyncio.gather(
            *(self._handle(item) for item in items), return_exceptions=True
        )
        for result in results:
            if isinstance(result, StoreUnavailable):
                self._metrics.store_unavailable.labels(where="dispatcher").inc()
            elif isinstance(result, BaseException):
                self._metrics.dispatcher_errors.inc()
                _log.error("outbox.item_crashed", error=type(result).__name__)
        return len(items)

    async def _handle(self, item: OutboxItem) -> None:
        try:
            if item.kind == CREATE_TASK:
                await self._create_task(item)
            elif item.kind == RESET_WORKER:
                await self._resets.handle(item)
            elif item.kind == CANCEL_TASK:
                await self._cancels.handle(item)
            elif item.kind == STATUS_CALLBACK and self._callbacks is not None:
                await self._callbacks.handle(
                    item,
                    store=self._store,
                    owner=self._owner,
                    now=self._clock,
                    backoff=lambda attempts: self._backoff(attempts, None),
                )
            else:
                _log.error("outbox.unknown_kind", outbox_id=item.id, kind=item.kind)
        except StoreUnavailable:
            # The lease runs out and the row is taken again, marked ambiguous: nothing is lost.
            self._metrics.store_unavailable.labels(where="dispatcher").inc()
            _log.warning("dispatcher.store_unavailable", escalation_id=item.escalation_id)
        except Exception as exc:
            # A bug with one row must not stall the others nor spin on it: back off like a 5xx.
            self._metrics.dispatcher_errors.inc()
            _log.exception("outbox.item_failed", escalation_id=item.escalation_id)
            await self._store.retry_outbox(
                item,
                owner=self._owner,
                due_at=self._clock() + timedelta(seconds=self._backoff(item.attempts, None)),
                error=f"internal error: {type(exc).__name__}",
                ambiguous=True,
            )

    async def _create_task(self, item: OutboxItem) -> None:
        escalation = await self._store.get_escalation(item.escalation_id)
        if escalation is None:
            await self._store.drop_outbox(item, owner=self._owner)
            return
        if escalation.task_sid is not None or escalation.status.is_terminal:
            await self._store.complete_outbox(
                item, owner=self._owner, previous=escalation, current=escalation
            )
            return
        try:
            task_sid, adopted = await self._find_or_create(item, escalation)
        except PermanentTwilioError as exc:
            await self._refused(item, escalation, exc)
        except TransientTwilioError as exc:
            await self._give_back(item, exc, event="task.create_failed")
        else:
            await self._attached(item, escalation, task_sid, adopted=adopted)

    async def _find_or_create(
        self, item: OutboxItem, escalation: Escalation
    ) -> tuple[TaskSid, bool]:
        """Create the task; after any outcome that may have created it, look for it first."""
        encoded = encode_attributes(escalation)
        ambiguous = item.ambiguous
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts) | stop_before_delay(self._budget),
            wait=self._wait,
            retry=retry_if_exception_type(TransientTwilioError),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if ambiguous:
                        found = await self._taskrouter.find_tasks([escalation.id])
                        if escalation.id in found:
                            return found[escalation.id], True
                    try:
                        sid = await self._taskrouter.create_task(
                            attributes=encoded.json,
                            workflow_sid=self._workflow_sid,
                            priority=escalation.priority,
                            ttl=escalation.timeout,
                            channel=task_channel(escalation.channel),
                        )
                    except TransientTwilioError as exc:
                        ambiguous = ambiguous or exc.may_have_succeeded
                        self._count_failure("transient", exc.code or exc.status)
                        raise
                    return sid, False
        except TransientTwilioError as exc:
            raise TransientTwilioError(
                str(exc),
                status=exc.status,
                code=exc.code,
                retry_after=exc.retry_after,
                may_have_succeeded=ambiguous,
            ) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _wait(self, state: RetryCallState) -> float:
        """Honour Retry-After when TaskRouter sends it; else exponential backoff with jitter."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TransientTwilioError) and error.retry_after is not None:
            return min(error.retry_after, self._max_backoff)
        return float(self._jitter(state))

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        ceiling = min(self._max_backoff, 0.5 * 2 ** min(attempts, 20))
        delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret
        return max(delay, retry_after or 0.0)

    def _count_failure(self, kind: str, code: int | None) -> None:
        self._metrics.task_create_failures.labels(kind=kind, code=str(code or "none")).inc()

    async def _attached(
        self, item: OutboxItem, escalation: Escalation, task_sid: TaskSid, *, adopted: bool
    ) -> None:
        now = self._clock()
        for _ in range(3):
            updated = task_attached(escalation, task_sid, now=now, adopted=adopted)
            if await self._store.complete_outbox(
                item, owner=self._owner, previous=escalation, current=updated
            ):
                self._metrics.tasks_created.labels(how="adopted" if adopted else "created").inc()
                self._metrics.time_to_task.observe((now - escalation.created_at).total_seconds())
                _log.info(
                    "task.created" if not adopted else "task.adopted",
                    escalation_id=escalation.id,
                    task_sid=task_sid,
                )
                return
            reloaded = await self._store.get_escalation(escalation.id)
            if reloaded is None:
                return
            escalation = reloaded
        # Lease lost or state kept changing: the row comes back ambiguous and the task is found.
        _log.warning("task.attach_deferred", escalation_id=escalation.id, task_sid=task_sid)

    async def _refused(
        self, item: OutboxItem, escalation: Escalation, exc: PermanentTwilioError
    ) -> None:
        failure = TwilioFailure(status=exc.status, code=exc.code, message=str(exc)[:500])
        failed = task_refused(escalation, failure, now=self._clock())
        await self._store.complete_outbox(
            item, owner=self._owner, previous=escalation, current=failed
        )
        self._count_failure("permanent", exc.code or exc.status)
        self._metrics.escalations_finished.labels(outcome=Outcome.TWILIO_REJECTED.value).inc()
        self._metrics.outcomes_by_reason.labels(
            reason=escalation.reason_code if escalation.known_reason else "unknown",
            outcome=Outcome.TWILIO_REJECTED.value,
        ).inc()
        _log.error(
            "task.create_refused", escalation_id=escalation.id, status=exc.status, code=exc.code
        )

    async def _give_back(
        self, item: OutboxItem, exc: TransientTwilioError, *, event: str = "outbox.retry"
    ) -> None:
        """Return the row for a later attempt, backing off and honouring Retry-After."""
        delay = self._backoff(item.attempts, exc.retry_after)
        await self._store.retry_outbox(
            item,
            owner=self._owner,
            due_at=self._clock() + timedelta(seconds=delay),
            error=str(exc),
            ambiguous=exc.may_have_succeeded,
        )
        _log.warning(
            event,
            escalation_id=item.escalation_id,
            kind=item.kind,
            status=exc.status,
            code=exc.code,
            attempts=item.attempts + 1,
            retry_in=round(delay, 3),
        )
