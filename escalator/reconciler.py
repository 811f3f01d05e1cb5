"""The reconciler: converges escalations that have had no news from TaskRouter's own record.

Callbacks can be lost (TaskRouter retries a callback once, on connect failure only). An open
escalation silent for ``stale_after`` seconds is re-read: its task from the Tasks API, or, once
TaskRouter has deleted the task (about 5 minutes after it ended), its Events from the Events
API (kept 30 days). What it finds is applied through ``Store.ingest_event``, exactly as if the
callbacks had arrived: the same transaction, the same outbox side effects.

A ``reservation.timeout`` learnt this way puts the worker back (the cascade fix) only when it
is younger than ``reset_window``: an older one most likely left the worker in the timeout
activity long enough for them, or a supervisor, to have decided where they should be.

Re-reading stale open escalations cannot find a timeout whose callback was lost when the task
then went to another worker and ended (the escalation is no longer open), nor one whose
``reservation.created`` was lost too. So, with the cascade fix on, each turn also sweeps the
workspace's recent ``reservation.timeout`` events (one Events API read, every page, however
many escalations there are) and applies them like callbacks: what is already known changes
nothing, and a worker is put back once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Literal

from escalator.domain.effects import WorkerReset, applies, side_effects
from escalator.domain.escalation import Escalation
from escalator.domain.events import TaskRouterEvent, apply_event
from escalator.domain.ids import EscalationId
from escalator.errors import PermanentTwilioError, StoreUnavailable, TransientTwilioError
from escalator.logs import get_logger
from escalator.metrics import Metrics
from escalator.routing import CascadeSpec
from escalator.store import IngestResult, Store
from escalator.taskrouter import TaskRouterClient
from escalator.taskrouter.records import facts_of_task

__all__ = ["Reconciled", "Reconciler"]

Clock = Callable[[], datetime]
Reconciled = Literal["changed", "unchanged", "not_found"]
_log = get_logger(__name__)
# The Events API keeps events 30 days; an older StartDate finds nothing more.
_EVENTS_KEPT = timedelta(days=30)
# Margin for the difference between our clock and TaskRouter's when asking for events.
_CLOCK_SKEW = timedelta(minutes=10)
_NOT_FOUND_AGAIN = timedelta(hours=1)
# How far each timeout sweep reaches back before the previous one: TaskRouter may record an
# event a little after it happened.
_SWEEP_OVERLAP = timedelta(seconds=30)


def _known(escalation: Escalation, fact: TaskRouterEvent) -> bool:
    """Whether the history already holds this fact, whatever key it came under."""
    return any(
        entry.event == fact.event_type and entry.reservation_sid == fact.reservation_sid
        for entry in escalation.history
    )


class Reconciler:
    """Re-reads stale open escalations from TaskRouter and applies what it finds."""

    def __init__(
        self,
        *,
        store: Store,
        taskrouter: TaskRouterClient,
        clock: Clock,
        metrics: Metrics,
        cascade: CascadeSpec,
        stale_after: float = 60.0,
        interval: float = 15.0,
        batch: int = 50,
        concurrency: int = 4,
        reset_window: float = 120.0,
        max_backoff: float = 60.0,
        on_effects: Callable[[], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._taskrouter = taskrouter
        self._clock = clock
        self._metrics = metrics
        self._cascade = cascade
        self._stale = timedelta(seconds=stale_after)
        self._interval = interval
        self._batch = batch
        self._concurrency = concurrency
        self._reset_window = timedelta(seconds=reset_window)
        self._max_backoff = max_backoff
        self._on_effects = on_effects
        self._sleep = sleep
        self._stopping = asyncio.Event()
        self._failures = 0
        self._paused_until: datetime | None = None
        self._swept_at: datetime | None = None

    def stop(self) -> None:
        """Ask ``run`` to return after the current turn."""
        self._stopping.set()

    async def run(self, *, burst: bool = False) -> None:
        """Reconcile every ``interval`` until stopped; with ``burst``, until a turn finds
        nothing to do (tests)."""
        while not self._stopping.is_set():
            try:
                claimed = await self.run_once()
            except StoreUnavailable:
                self._metrics.store_unavailable.labels(where="reconciler").inc()
                _log.warning("reconciler.store_unavailable")
                claimed = 0
            except Exception:
                # The loop must outlive any bug: claims simply expire.
                self._metrics.reconcile_errors.labels(kind="internal").inc()
                _log.exception("reconciler.turn_failed")
                claimed = 0
            pause = self._pause()
            if pause == 0:
                if burst and claimed == 0:
                    return
                if burst or claimed >= self._batch:
                    continue
            await self._wait(pause if burst else max(pause, self._interval))

    async def _wait(self, seconds: float) -> None:
        sleeping = asyncio.ensure_future(self._sleep(seconds))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({sleeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeping, stopping):
                waiter.cancel()

    def _pause(self) -> float:
        """Seconds left of a back-off TaskRouter asked for (429), or 0."""
        if self._paused_until is None:
            return 0.0
        left = (self._paused_until - self._clock()).total_seconds()
        if left <= 0:
            self._paused_until = None
            return 0.0
        return left

    async def run_once(self) -> int:
        """Claim one batch of stale escalations and re-read them; how many were claimed."""
        now = self._clock()
        if self._pause() > 0:
            return 0
        await self._sweep_timeouts(now)
        if self._pause() > 0:
            return 0
        claimed = await self._store.claim_stale(
            now=now, quiet_since=now - self._stale, hold_until=now + self._stale, limit=self._batch
        )
        gate = asyncio.Semaphore(self._concurrency)
        await asyncio.gather(*(self._guarded(escalation_id, gate) for escalation_id in claimed))
        return len(claimed)

    async def _sweep_timeouts(self, now: datetime) -> None:
        """Apply the workspace's reservation timeouts since the last sweep (at most one sweep
        per ``interval``), so that a worker whose timeout callback was lost is put back."""
        if not self._cascade.reset:
            return
        if self._swept_at is not None and now - self._swept_at < timedelta(seconds=self._interval):
            return
        since = now - self._reset_window
        if self._swept_at is not None:
            since = max(since, self._swept_at - _SWEEP_OVERLAP)
        try:
            facts = await self._taskrouter.events_of_type("reservation.timeout", since=since)
        except TransientTwilioError as exc:
            self._note_transient(exc)
            _log.warning("reconciler.sweep_retry", status=exc.status, code=exc.code)
            return
        except PermanentTwilioError as exc:
            self._metrics.reconcile_errors.labels(kind="refused").inc()
            _log.error("reconciler.sweep_refused", status=exc.status, code=exc.code)
            return
        found = 0
        for fact in facts:
            found += await self._apply(fact)
        self._swept_at = now
        if found:
            self._metrics.timeouts_swept.inc(found)
            _log.info("reconciler.timeouts_swept", found=found, read=len(facts))

    async def _guarded(self, escalation_id: EscalationId, gate: asyncio.Semaphore) -> None:
        async with gate:
            if self._paused_until is not None:
                # TaskRouter asked us to slow down: the rest of the batch waits its turn.
                await self._store.reconcile_later(escalation_id, at=self._paused_until)
                return
            try:
                result = await self.reconcile(escalation_id)
            except TransientTwilioError as exc:
                await self._back_off(escalation_id, exc)
                return
            except PermanentTwilioError as exc:
                self._metrics.reconcile_errors.labels(kind="refused").inc()
                _log.error(
                    "reconciler.refused",
                    escalation_id=escalation_id,
                    status=exc.status,
                    code=exc.code,
                )
                return
            except StoreUnavailable:
                self._metrics.store_unavailable.labels(where="reconciler").inc()
                _log.warning("reconciler.store_unavailable", escalation_id=escalation_id)
                return
            except Exception:
                self._metrics.reconcile_errors.labels(kind="internal").inc()
                _log.exception("reconciler.item_failed", escalation_id=escalation_id)
                return
            self._failures = 0
            self._metrics.reconciled.labels(result=result).inc()

    async def _back_off(self, escalation_id: EscalationId, exc: TransientTwilioError) -> None:
        """Retry later: honour Retry-After, else exponential backoff with jitter; on a 429
        (Twilio code 20429, "safe to retry after backing off") the whole loop pauses."""
        at, delay = self._note_transient(exc)
        _log.warning(
            "reconciler.retry",
            escalation_id=escalation_id,
            status=exc.status,
            code=exc.code,
            retry_in=round(delay, 3),
        )
        await self._store.reconcile_later(escalation_id, at=at)

    def _note_transient(self, exc: TransientTwilioError) -> tuple[datetime, float]:
        """Count a transient failure; when to try again, and in how many seconds."""
        self._failures += 1
        ceiling = min(self._max_backoff, 0.5 * 2 ** min(self._failures, 20))
        delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret
        if exc.retry_after is not None:
            delay = min(self._max_backoff, max(delay, exc.retry_after))
        at = self._clock() + timedelta(seconds=delay)
        throttled = exc.status == 429
        if throttled:
            self._paused_until = max(self._paused_until or at, at)
        self._metrics.reconcile_errors.labels(kind="throttled" if throttled else "transient").inc()
        return at, delay

    async def reconcile(self, escalation_id: EscalationId) -> Reconciled:
        """Re-read one escalation's task from TaskRouter and apply what it shows."""
        escalation = await self._store.get_escalation(escalation_id)
        if escalation is None or escalation.task_sid is None or escalation.status.is_terminal:
            return "unchanged"
        task = await self._taskrouter.fetch_task(escalation.task_sid)
        if task is not None:
            reservations = await self._taskrouter.task_reservations(escalation.task_sid)
            facts = facts_of_task(task, reservations)
        else:
            now = self._clock()
            since = max(escalation.created_at - _CLOCK_SKEW, now - _EVENTS_KEPT)
            facts = await self._taskrouter.task_events(escalation.task_sid, since=since)
            if not facts:
                # Neither the task nor its events: a misconfigured workspace SID looks just like
                # this, so nothing is concluded (an operator looks at the metric and the log);
                # the escalation is read again hourly rather than every interval.
                _log.warning(
                    "reconciler.task_not_found",
                    escalation_id=escalation_id,
                    task_sid=escalation.task_sid,
                )
                await self._store.reconcile_later(escalation_id, at=now + _NOT_FOUND_AGAIN)
                return "not_found"
        changed = False
        for fact in facts:
            changed = await self._apply(fact) or changed
        if changed:
            after = await self._store.get_escalation(escalation_id)
            _log.info(
                "reconciler.changed",
                escalation_id=escalation_id,
                task_sid=escalation.task_sid,
                source="tasks" if task is not None else "events",
                status=after.status.value if after else None,
                outcome=after.outcome.value if after and after.outcome else None,
            )
        return "changed" if changed else "unchanged"

    async def _apply(self, fact: TaskRouterEvent) -> bool:
        """Ingest one fact as the webhook would; whether it changed the escalation."""
        now = self._clock()

        def react(escalation: Escalation) -> tuple[Escalation, tuple[WorkerReset, ...]] | None:
            if not applies(escalation, fact) or _known(escalation, fact):
                return None
            after = apply_event(escalation, fact)
            effects = side_effects(escalation, after, fact, self._cascade)
            if effects and now - fact.occurred_at > self._reset_window:
                _log.info(
                    "reconciler.reset_skipped",
                    worker_sid=fact.worker_sid,
                    reservation_sid=fact.reservation_sid,
                )
                effects = ()
            return after, effects

        ingested = await self._store.ingest_event(fact, received_at=now, react=react)
        before, after = ingested.before, ingested.after
        if ingested.result is not IngestResult.APPLIED or before is None or after is None:
            return False
        if after.status.is_terminal and not before.status.is_terminal and after.outcome:
            self._metrics.finished(outcome=after.outcome.value, reason=after.metric_reason)
        if ingested.effects and self._on_effects is not None:
            self._on_effects()
        return after is not before
