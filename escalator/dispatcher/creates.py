"""Creating escalations' tasks exactly once: find before create, every attempt recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)

from escalator.dispatcher.lookups import Lookup, TaskLookups
from escalator.domain.attributes import EncodedAttributes, encode_attributes, task_channel
from escalator.domain.escalation import (
    Attempt,
    AttemptKind,
    AttemptOutcome,
    Escalation,
    Outcome,
    Status,
    TwilioFailure,
    attempts_recorded,
    task_after_end,
    task_attached,
    task_refused,
)
from escalator.domain.ids import EscalationId, TaskSid
from escalator.errors import PermanentTwilioError, TransientTwilioError, TwilioError
from escalator.logs import get_logger
from escalator.metrics import Metrics
from escalator.store import OutboxItem, Store
from escalator.taskrouter import TaskRouterClient

__all__ = ["Record", "Retry", "TaskCreates"]

_log = get_logger(__name__)

# What a give-back saves on the escalation with the row (the attempts that failed).
Record = Callable[[Escalation], Escalation]
Retry = Callable[[OutboxItem, TransientTwilioError, Record | None], Awaitable[None]]


class _NotThisLease(TransientTwilioError):
    """Retried later by giving the row back, not within this lease."""


def _worth_retrying_now(exc: BaseException) -> bool:
    return isinstance(exc, TransientTwilioError) and not isinstance(exc, _NotThisLease)


def _failed(kind: AttemptKind, exc: TwilioError, at: datetime) -> Attempt:
    outcome = (
        AttemptOutcome.REJECTED
        if isinstance(exc, PermanentTwilioError)
        else AttemptOutcome.TRANSIENT_ERROR
    )
    return Attempt(at=at, kind=kind, outcome=outcome, twilio_code=exc.code, http_status=exc.status)


class TaskCreates:
    """Carries out ``create_task`` outbox rows: adopts the task an earlier attempt may have
    made, else creates it; a task that arrives after its escalation ended is canceled."""

    def __init__(
        self,
        *,
        store: Store,
        taskrouter: TaskRouterClient,
        lookups: TaskLookups,
        workflow_sid: str,
        clock: Callable[[], datetime],
        metrics: Metrics,
        owner: str,
        attempts_per_lease: int,
        budget: float,
        call_timeout: float,
        wait: Callable[[RetryCallState], float],
        sleep: Callable[[float], Awaitable[None]],
        retry: Retry,
    ) -> None:
        self._store = store
        self._taskrouter = taskrouter
        self._lookups = lookups
        self._workflow_sid = workflow_sid
        self._clock = clock
        self._metrics = metrics
        self._owner = owner
        self._attempts = attempts_per_lease
        self._budget = budget
        self._call_timeout = call_timeout
        self._wait = wait
        self._sleep = sleep
        self._retry = retry

    def lookup_wait(self, deadline: float) -> float:
        """How long a lookup may wait for its rate-limit turn: the create that may follow it
        must still end before the lease does (``deadline``, on the event loop's clock)."""
        return deadline - asyncio.get_running_loop().time() - 2 * self._call_timeout

    async def handle(self, item: OutboxItem, lookup: Lookup | None, deadline: float) -> None:
        """Find or create the escalation's task; ``lookup`` is what a batched lookup found.
        The escalation is read unless the row came with it."""
        escalation = item.escalation or await self._store.get_escalation(item.escalation_id)
        if escalation is None:
            await self._store.drop_outbox(item, owner=self._owner)
            return
        if escalation.task_sid is not None:
            # Adopted through its task.created event; a waiting cancel is told the task.
            waiting = escalation.task_sid if escalation.cancel_requested else None
            await self._store.complete_outbox(
                item,
                owner=self._owner,
                previous=escalation,
                current=escalation,
                cancel_task=waiting,
            )
            return
        forgone = escalation.status.is_terminal or escalation.cancel_requested
        if forgone and not item.ambiguous:
            # Ended, or its client canceled, before any create could have reached TaskRouter:
            # nothing to look for (a waiting cancel looks for itself, then settles).
            await self._store.complete_outbox(
                item, owner=self._owner, previous=escalation, current=escalation
            )
            return
        attempts: list[Attempt] = []
        task_sid: TaskSid | None
        try:
            if forgone:
                # A create may have reached TaskRouter before the end or the cancel: find the
                # task (then it is canceled), never create one.
                task_sid = await self._look_up(item, escalation.id, lookup, deadline, attempts)
                adopted = True
            else:
                task_sid, adopted = await self._find_or_create(
                    item, escalation, lookup, deadline, attempts
                )
        except PermanentTwilioError as exc:
            await self._refused(item, escalation, exc, attempts)
        except TransientTwilioError as exc:
            await self._retry(item, exc, self._recorder(item, attempts))
        else:
            await self._attached(item, escalation, task_sid, adopted=adopted, attempts=attempts)

    def _recorder(self, item: OutboxItem, attempts: list[Attempt]) -> Record | None:
        if not attempts:
            return None
        return lambda escalation: attempts_recorded(escalation, attempts, retry=item.attempts + 1)

    async def _find_or_create(
        self,
        item: OutboxItem,
        escalation: Escalation,
        lookup: Lookup | None,
        deadline: float,
        attempts: list[Attempt],
    ) -> tuple[TaskSid, bool]:
        """Create the task; after any outcome that may have created it, look for it first."""
        encoded = encode_attributes(escalation)
        ambiguous = item.ambiguous
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts) | stop_before_delay(self._budget),
            wait=self._wait,
            retry=retry_if_exception(_worth_retrying_now),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if ambiguous:
                        # The batch's lookup serves the first attempt only.
                        prefetched, lookup = lookup, None
                        found = await self._look_up(
                            item, escalation.id, prefetched, deadline, attempts
                        )
                        if found is not None:
                            return found, True
                    try:
                        return await self._create(escalation, encoded, deadline, attempts), False
                    except TransientTwilioError as exc:
                        ambiguous = ambiguous or exc.may_have_succeeded
                        raise
        except TransientTwilioError as exc:
            raise TransientTwilioError(
                str(exc),
                status=exc.status,
                code=exc.code,
                retry_after=exc.retry_after,
                may_have_succeeded=ambiguous,
            ) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _look_up(
        self,
        item: OutboxItem,
        escalation_id: EscalationId,
        lookup: Lookup | None,
        deadline: float,
        attempts: list[Attempt],
    ) -> TaskSid | None:
        """The oldest task that carries the escalation's id, if any; recorded unless found
        (``task.adopted`` tells that)."""
        if lookup is None:
            found = await self._lookups.find([escalation_id], max_wait=self.lookup_wait(deadline))
            lookup = found[escalation_id]
        now = self._clock()
        error = lookup.error
        if error is not None:
            attempts.append(_failed(AttemptKind.LOOKUP, error, now))
            # A refused lookup is no verdict on the escalation: its task may exist, so it is
            # not failed but looked for again later (the refusal is logged and counted).
            transient = isinstance(error, TransientTwilioError)
            kind = TransientTwilioError if transient else _NotThisLease
            retry_after = error.retry_after if isinstance(error, TransientTwilioError) else None
            raise kind(
                str(error),
                status=error.status,
                code=error.code,
                retry_after=retry_after,
                may_have_succeeded=item.ambiguous,
            ) from error
        if lookup.tasks:
            return lookup.tasks[0]
        attempts.append(Attempt(at=now, kind=AttemptKind.LOOKUP, outcome=AttemptOutcome.NOT_FOUND))
        return None

    async def _create(
        self,
        escalation: Escalation,
        encoded: EncodedAttributes,
        deadline: float,
        attempts: list[Attempt],
    ) -> TaskSid:
        if asyncio.get_running_loop().time() + self._call_timeout > deadline:
            # The create could still be in flight when the lease ends and another replica
            # takes the row: give it back instead.
            raise _NotThisLease("no time left in the lease to create the task")
        try:
            sid = await self._taskrouter.create_task(
                attributes=encoded.json,
                workflow_sid=self._workflow_sid,
                priority=escalation.priority,
                ttl=escalation.timeout,
                channel=task_channel(escalation.channel),
            )
        except TransientTwilioError as exc:
            attempts.append(_failed(AttemptKind.CREATE, exc, self._clock()))
            self._metrics.task_create_attempts.labels(outcome="transient_error").inc()
            self._metrics.task_create_failures.labels(
                kind="transient", code=str(exc.code or exc.status or "none")
            ).inc()
            raise
        except PermanentTwilioError:
            self._metrics.task_create_attempts.labels(outcome="rejected").inc()
            raise
        self._metrics.task_create_attempts.labels(outcome="created").inc()
        return sid

    async def _attached(
        self,
        item: OutboxItem,
        escalation: Escalation,
        task_sid: TaskSid | None,
        *,
        adopted: bool,
        attempts: list[Attempt],
    ) -> None:
        now = self._clock()
        for _ in range(3):
            current = attempts_recorded(escalation, attempts, retry=item.attempts + 1)
            cancel: TaskSid | None = None
            if task_sid is not None and escalation.task_sid is None:
                if escalation.status.is_terminal:
                    # It ended while its task was being made: no orphan task left routing.
                    current = task_after_end(current, task_sid, now=now, adopted=adopted)
                    cancel = task_sid
                else:
                    current = task_attached(current, task_sid, now=now, adopted=adopted)
            if escalation.cancel_requested and escalation.task_sid in (None, task_sid):
                # Its client's cancel waits for this task (which its task.created event may
                # have adopted first): the cancel is told it, and carried out at once.
                cancel = task_sid
            if await self._store.complete_outbox(
                item, owner=self._owner, previous=escalation, current=current, cancel_task=cancel
            ):
                self._count_attached(
                    escalation,
                    task_sid,
                    adopted=adopted,
                    canceled=bool(cancel) and escalation.status.is_terminal,
                )
                return
            reloaded = await self._store.get_escalation(escalation.id)
            if reloaded is None:
                return
            escalation = reloaded
        # Lease lost or state kept changing: the row comes back ambiguous and the task is found.
        _log.warning("task.attach_deferred", escalation_id=escalation.id, task_sid=task_sid)

    def _count_attached(
        self, escalation: Escalation, task_sid: TaskSid | None, *, adopted: bool, canceled: bool
    ) -> None:
        if task_sid is None:
            return
        how = "adopted" if adopted else "created"
        if canceled:
            self._metrics.tasks_after_end.labels(how=how).inc()
            _log.warning(
                "task.after_end",
                escalation_id=escalation.id,
                task_sid=task_sid,
                status=escalation.status.value,
            )
        elif escalation.task_sid not in (None, task_sid):
            # Adopted meanwhile through its task.created event: this one is a second task.
            self._metrics.duplicate_tasks.inc()
            _log.error(
                "task.duplicate_created",
                escalation_id=escalation.id,
                task_sid=task_sid,
                kept=escalation.task_sid,
            )
        elif escalation.task_sid is None:
            now = self._clock()
            self._metrics.tasks_created.labels(how=how).inc()
            self._metrics.time_to_task.observe((now - escalation.created_at).total_seconds())
            _log.info(f"task.{how}", escalation_id=escalation.id, task_sid=task_sid)

    async def _refused(
        self,
        item: OutboxItem,
        escalation: Escalation,
        exc: PermanentTwilioError,
        attempts: list[Attempt],
    ) -> None:
        failure = TwilioFailure(status=exc.status, code=exc.code, message=str(exc)[:500])
        now = self._clock()
        for _ in range(3):
            failed = task_refused(
                attempts_recorded(escalation, attempts, retry=item.attempts + 1), failure, now=now
            )
            if await self._store.complete_outbox(
                item, owner=self._owner, previous=escalation, current=failed
            ):
                break
            reloaded = await self._store.get_escalation(escalation.id)
            if reloaded is None:
                return
            escalation = reloaded
        else:
            _log.warning("task.refusal_deferred", escalation_id=escalation.id)
            return
        code = str(exc.code or exc.status or "none")
        self._metrics.task_create_failures.labels(kind="permanent", code=code).inc()
        self._metrics.twilio_rejects.labels(operation="create", code=code).inc()
        _log.error(
            "task.create_refused", escalation_id=escalation.id, status=exc.status, code=exc.code
        )
        if failed.status is Status.FAILED and not escalation.status.is_terminal:
            self._metrics.finished(
                outcome=Outcome.TWILIO_REJECTED.value, reason=escalation.metric_reason
            )
