"""The dispatcher's loop: leases due outbox rows and carries each out by its kind."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from tenacity import RetryCallState, wait_random_exponential

from escalator.dispatcher.callbacks import StatusCallbacks
from escalator.dispatcher.cancels import TaskCancels
from escalator.dispatcher.creates import Record, TaskCreates
from escalator.dispatcher.lookups import Lookup, TaskLookups
from escalator.dispatcher.resets import WorkerResets
from escalator.domain.ids import EscalationId
from escalator.errors import StoreUnavailable, TransientTwilioError
from escalator.logs import get_logger
from escalator.metrics import Metrics
from escalator.store import (
    CANCEL_TASK,
    CREATE_TASK,
    OUTBOX_KINDS,
    RESET_WORKER,
    STATUS_CALLBACK,
    Claim,
    OutboxItem,
    Store,
)
from escalator.taskrouter import TaskRouterClient

__all__ = ["Clock", "Dispatcher"]

Clock = Callable[[], datetime]
_log = get_logger(__name__)


class Dispatcher:
    """Leases due outbox rows: finds or creates each escalation's task exactly once, and
    puts timed-out workers back to work. New escalations' create rows come to it straight
    from the transaction that wrote them, already leased (the store's ``Handoff``), while it
    has room in hand and no older row is waiting."""

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
        # while our request is in flight and create a second task. (TaskCreates also checks
        # the lease's own deadline before each create, rate-limit waits included.)
        self._budget = max(0.0, lease_seconds - 2 * call_timeout - 1.0)
        self._sleep = sleep
        self._jitter = wait_random_exponential(multiplier=0.2, max=5)
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        # Rows leased and not yet done, and the signal that one is done (run()).
        self._in_hand = 0
        self._room = asyncio.Event()
        self._refill = max(1, batch * 3 // 4)
        self._working: set[asyncio.Task[None]] = set()
        # Create rows were written unleased (no room in hand): they go first, so no new row
        # is claimed until a lease comes back with room to spare. The count tells a lease
        # whether another row was left meanwhile.
        self._unleased_waiting = False
        self._unleased_left = 0
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
        self._lookups = TaskLookups(taskrouter=taskrouter, metrics=metrics)
        self._creates = TaskCreates(
            store=store,
            taskrouter=taskrouter,
            lookups=self._lookups,
            workflow_sid=workflow_sid,
            clock=clock,
            metrics=metrics,
            owner=owner,
            attempts_per_lease=attempts_per_lease,
            budget=self._budget,
            call_timeout=call_timeout,
            wait=self._wait,
            sleep=sleep,
            retry=lambda item, exc, record: self._give_back(
                item, exc, event="task.create_failed", record=record
            ),
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

    def claim(self) -> Claim | None:
        """A lease for a new escalation's create row, while there is room in hand and no
        older row waits for one (the store's ``Handoff``)."""
        if self._stopping.is_set():
            return None
        if self._unleased_waiting or self._in_hand >= self._batch:
            self.left_unleased()
            return None
        self._in_hand += 1
        deadline = asyncio.get_running_loop().time() + self._lease.total_seconds() - 1.0
        return Claim(owner=self._owner, expires_at=self._clock() + self._lease, deadline=deadline)

    def take(self, claim: Claim, item: OutboxItem | None) -> None:
        """Carry out the create row written under ``claim`` (None: the claim comes back)."""
        if item is None or self._stopping.is_set():
            # Stopping: a row written under the claim keeps our lease, which release_leases
            # gives up (or which runs out), and it is then looked for before any create.
            self._in_hand -= 1
            self._room.set()
            return
        self._keep(self._carry_out([item], claim.deadline))

    def left_unleased(self) -> None:
        """Create rows were written without a lease: lease them before claiming new ones."""
        self._unleased_waiting = True
        self._unleased_left += 1
        self._wakeup.set()

    def _keep(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._working.add(task)
        task.add_done_callback(self._working.discard)

    async def run(self) -> None:
        """Dispatch until stopped. Up to ``batch`` rows are in hand at once, and while more
        are due each row done makes room for the next: one slow call (an answer held back, a
        long Retry-After) delays its own row, not the ones due after it. While the database is
        down each lease waits twice as long as the last, up to 5 s. On stop, the rows in hand
        are finished before this returns."""
        outage = 0
        # Whether the last lease was full: more rows may be due, so a row done is a reason to
        # lease again (otherwise new work comes with a wake, or the interval).
        backlog = False
        try:
            while not self._stopping.is_set():
                self._room.clear()
                free = self._batch - self._in_hand
                # Each lease is a write transaction, and it competes with the requests for the
                # one core: refill once three quarters of the hand are free, not row by row
                # (refilling by halves cost 1.5 ms more CPU per escalation and a third of the
                # ack throughput in bench/ack_bench.py; by quarters, none measurable).
                if free > 0 and (self._in_hand == 0 or free >= self._refill):
                    self._wakeup.clear()  # this lease sees every commit made before it
                    try:
                        leased = await self._start(free)
                        outage = 0
                        backlog = leased == free
                    except StoreUnavailable:
                        backlog = False
                        outage += 1
                        self._metrics.store_unavailable.labels(where="dispatcher").inc()
                        _log.warning("dispatcher.store_unavailable", turns=outage)
                    except Exception:
                        # The loop must outlive any bug: leased rows come back when their
                        # lease expires.
                        backlog = False
                        self._metrics.dispatcher_errors.inc()
                        _log.exception("dispatcher.turn_failed")
                if backlog and self._batch - self._in_hand >= self._refill:
                    continue
                await self._rest(
                    max(self._interval, min(self._interval * 2**outage, 5.0)), backlog=backlog
                )
        except asyncio.CancelledError:
            # Out of time (shutdown's grace): the rows in hand are given up with it; their
            # leases run out and they are taken again, looked for before any create.
            for task in self._working:
                task.cancel()
            raise
        finally:
            await self.settle()

    async def _rest(self, seconds: float, *, backlog: bool) -> None:
        """Wait up to ``seconds``. A commit (wake) ends the wait early: new work, or the
        database is back. With a backlog, or a wake the full hand could not serve yet, a row
        done ends it too."""
        pending = self._wakeup.is_set()
        events = [self._stopping]
        if backlog or pending:
            events.append(self._room)
        if not pending:
            events.append(self._wakeup)
        waits = {asyncio.ensure_future(event.wait()) for event in events}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _start(self, limit: int) -> int:
        """Lease up to ``limit`` due rows and start carrying them out; how many were leased."""
        deadline = asyncio.get_running_loop().time() + self._lease.total_seconds() - 1.0
        items = await self._lease_due(limit)
        if items:
            self._in_hand += len(items)
            self._keep(self._carry_out(items, deadline))
        return len(items)

    async def run_once(self) -> int:
        """Lease one batch of due rows, look up its ambiguous creates together, and handle
        the rows concurrently; how many were leased."""
        # When our leases end, on the event loop's clock (a second early, for clock drift).
        deadline = asyncio.get_running_loop().time() + self._lease.total_seconds() - 1.0
        items = await self._lease_due(self._batch)
        self._in_hand += len(items)
        await self._carry_out(items, deadline)
        return len(items)

    async def _lease_due(self, limit: int) -> list[OutboxItem]:
        left = self._unleased_left
        items = await self._store.lease_outbox(
            owner=self._owner,
            now=self._clock(),
            lease_for=self._lease,
            limit=limit,
            kinds=self._kinds,
        )
        if len(items) < limit and left == self._unleased_left:
            # Every row left unleased before this lease is in hand now: claim new ones again.
            self._unleased_waiting = False
        return items

    async def settle(self) -> None:
        """Wait until the rows in hand, handed over or leased, are done."""
        while self._working:
            await asyncio.gather(*self._working, return_exceptions=True)

    async def _carry_out(self, items: list[OutboxItem], deadline: float) -> None:
        """Handle leased rows concurrently, their ambiguous creates looked up together first;
        each row makes room for another as soon as it is done."""
        try:
            found = await self._look_up_ambiguous(items, deadline)
        except Exception:
            # Like any bug with a row: the leases run out and the rows are taken again.
            self._in_hand -= len(items)
            self._room.set()
            self._metrics.dispatcher_errors.inc()
            _log.exception("dispatcher.lookup_crashed", rows=len(items))
            return
        results = await asyncio.gather(
            *(
                self._handle_in_hand(item, found.get(item.escalation_id), deadline)
                for item in items
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, StoreUnavailable):
                self._metrics.store_unavailable.labels(where="dispatcher").inc()
            elif isinstance(result, BaseException):
                self._metrics.dispatcher_errors.inc()
                _log.error("outbox.item_crashed", error=type(result).__name__)

    async def _handle_in_hand(
        self, item: OutboxItem, lookup: Lookup | None, deadline: float
    ) -> None:
        try:
            await self._handle(item, lookup, deadline)
        finally:
            self._in_hand -= 1
            self._room.set()

    async def _look_up_ambiguous(
        self, items: list[OutboxItem], deadline: float
    ) -> dict[EscalationId, Lookup]:
        """One batched lookup for the creates that may have made their task already (a
        timeout, a reset, a 5xx, a lease that ran out): found, a task is adopted, not made
        twice."""
        ambiguous = [
            item.escalation_id for item in items if item.kind == CREATE_TASK and item.ambiguous
        ]
        if not ambiguous:
            return {}
        return await self._lookups.find(ambiguous, max_wait=self._creates.lookup_wait(deadline))

    async def _handle(self, item: OutboxItem, lookup: Lookup | None, deadline: float) -> None:
        try:
            if item.kind == CREATE_TASK:
                await self._creates.handle(item, lookup, deadline)
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

    async def _give_back(
        self,
        item: OutboxItem,
        exc: TransientTwilioError,
        *,
        event: str = "outbox.retry",
        record: Record | None = None,
    ) -> None:
        """Return the row for a later attempt, backing off and honouring Retry-After; what
        ``record`` notes on the escalation is saved with it."""
        delay = self._backoff(item.attempts, exc.retry_after)
        await self._store.retry_outbox(
            item,
            owner=self._owner,
            due_at=self._clock() + timedelta(seconds=delay),
            error=str(exc),
            ambiguous=exc.may_have_succeeded,
            record=record,
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
