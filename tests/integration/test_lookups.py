"""Find before create against the simulator over HTTP: batched, rate-limited, every attempt
recorded, and no task left routing for an escalation that has ended."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from escalator.dispatcher import Dispatcher
from escalator.domain.attributes import encode_attributes
from escalator.domain.escalation import AttemptOutcome, HistoryEntry, Outcome, Status
from escalator.domain.ids import EscalationId, TaskSid
from escalator.logs import configure_logging
from escalator.simulator import Fault
from escalator.simulator.errors import TwilioApiError
from escalator.simulator.limits import RateLimits
from escalator.taskrouter import TaskRouterClient
from escalator.taskrouter.ratelimit import LookupDeferred, RateLimiter
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.integration.conftest import API_KEY, Service
from tests.integration.webhooks import body, metric

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@dataclass
class VirtualTime:
    """Monotonic seconds that move only when someone sleeps on them."""

    now: float = 1_000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class RecordingLimits(RateLimits):
    """The simulator's rate limits, noting when each EvaluateTaskAttributes request came."""

    seen: list[float] = field(default_factory=list)
    throttled: list[float] = field(default_factory=list)

    def check(self, workspace_sid: str, *, evaluates: bool = False) -> None:
        if not evaluates:
            super().check(workspace_sid)
            return
        moment = self.monotonic()
        self.seen.append(moment)
        try:
            super().check(workspace_sid, evaluates=True)
        except TwilioApiError:
            self.throttled.append(moment)
            raise


def _record_lookups(service: Service, clock: Callable[[], float] | None = None) -> RecordingLimits:
    limits = RecordingLimits()
    if clock is not None:
        limits.monotonic = clock
    service.sim.running.state.limits = limits
    return limits


@pytest.fixture
async def clients() -> AsyncIterator[list[TaskRouterClient]]:
    opened: list[TaskRouterClient] = []
    yield opened
    for client in opened:
        await client.close()


def _client_with(
    service: Service, clients: list[TaskRouterClient], **options: Any
) -> TaskRouterClient:
    """A TaskRouter client for the simulator with these ``options``."""
    taskrouter = TaskRouterClient(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        workspace_sid=service.sim.workspace.workspace_sid,
        base_url=service.sim.url,
        timeout=5,
        **options,
    )
    clients.append(taskrouter)
    return taskrouter


def _dispatcher_with(
    service: Service, clients: list[TaskRouterClient], **client_options: Any
) -> Dispatcher:
    """The service's dispatcher, over a TaskRouter client of its own (``client_options``)."""
    taskrouter = _client_with(service, clients, **client_options)

    async def no_sleep(seconds: float) -> None:
        service.waits.append(seconds)

    return Dispatcher(
        store=service.store,
        taskrouter=taskrouter,
        workflow_sid=service.sim.workspace.workflow_sid,
        clock=service.clock,
        metrics=service.metrics,
        owner="test",
        call_timeout=5,
        sleep=no_sleep,
    )


async def _escalate(service: Service, conversation_id: str) -> EscalationId:
    response = await service.post(body(conversation_id))
    assert response.status == 201, await response.text()
    return EscalationId((await response.json())["id"])


async def _created_behind_a_dead_lease(
    service: Service, copies: int = 1
) -> dict[EscalationId, list[TaskSid]]:
    """A dispatcher leases every due create, makes each task, and dies before recording any."""
    items = await service.store.lease_outbox(
        owner="dead", now=service.clock(), lease_for=timedelta(seconds=30), limit=500
    )
    created: dict[EscalationId, list[TaskSid]] = {}
    for item in items:
        escalation = await service.store.get_escalation(item.escalation_id)
        assert escalation is not None
        for _ in range(copies):
            sid = await service.taskrouter.create_task(
                attributes=encode_attributes(escalation).json,
                workflow_sid=service.sim.workspace.workflow_sid,
                priority=1,
                ttl=600,
                channel="chat",
            )
            created.setdefault(escalation.id, []).append(sid)
    return created


async def _tasks(service: Service) -> list[Any]:
    workspace = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    return list(await workspace.tasks.list_async(page_size=1000))


async def _attempts(service: Service, escalation_id: str) -> list[HistoryEntry]:
    escalation = await service.store.get_escalation(EscalationId(escalation_id))
    assert escalation is not None
    return [entry for entry in escalation.history if entry.attempt is not None]


def _told(entries: list[HistoryEntry]) -> list[tuple[str, AttemptOutcome | None, int | None]]:
    return [(entry.event, entry.attempt, entry.twilio_code) for entry in entries]


async def test_twenty_creates_lost_in_a_crash_are_found_with_one_lookup_and_adopted(
    service: Service,
) -> None:
    limits = _record_lookups(service)
    ids = [await _escalate(service, f"lost-{n}") for n in range(20)]
    created = await _created_behind_a_dead_lease(service)
    service.clock.advance(31)  # the dead dispatcher's leases run out: every row is ambiguous

    assert await service.dispatcher.run_once() == 20

    assert len(limits.seen) == 1  # 20 ids in one expression (at most 50 to a request)
    for escalation_id in ids:
        escalation = await service.get(escalation_id)
        assert escalation["status"] == "queued"
        assert [escalation["task_sid"]] == created[escalation_id]
        assert escalation["history"][-1]["event"] == "task.adopted"
    tasks = await _tasks(service)
    owners = sorted(json.loads(task.attributes)["escalation_id"] for task in tasks)
    assert owners == sorted(ids)  # exactly one task per escalation
    assert metric(service, "escalator_task_lookups_total", result="found") == 20
    assert metric(service, "escalator_task_lookup_batch_size_count") == 1
    assert metric(service, "escalator_task_lookup_batch_size_sum") == 20
    assert metric(service, "escalator_tasks_created_total", how="adopted") == 20
    assert await service.store.outbox_backlog() == 0


async def test_creates_whose_answers_are_lost_are_looked_up_together(service: Service) -> None:
    limits = _record_lookups(service)
    ids = [await _escalate(service, f"reset-{n}") for n in range(20)]
    # Every create reaches TaskRouter and makes its task, then the connection is reset.
    service.sim.running.state.faults.add(
        Fault("tasks.create", status=None, ambiguous="reset", times=20)
    )

    assert await service.dispatcher.run_once() == 20

    # The first lookup goes as soon as one create failed; all the others wait for the next
    # turn of the rate limit and go together (a third request would only carry stragglers).
    assert 1 <= len(limits.seen) <= 3
    assert limits.throttled == []
    for escalation_id in ids:
        assert (await service.get(escalation_id))["status"] == "queued"
    tasks = await _tasks(service)
    assert sorted(json.loads(t.attributes)["escalation_id"] for t in tasks) == sorted(ids)


async def test_lookups_are_spaced_by_the_rate_limit_on_a_virtual_clock(
    service: Service, clients: list[TaskRouterClient]
) -> None:
    time = VirtualTime()
    # The simulator counts its 3 per second on the same virtual clock: it answers 429 to
    # any fourth request within a second.
    limits = _record_lookups(service, time)
    dispatcher = _dispatcher_with(
        service,
        clients,
        lookup_ids_per_request=1,
        lookup_limiter=RateLimiter(3, clock=time, sleep=time.sleep),
    )
    ids = [await _escalate(service, f"spaced-{n}") for n in range(7)]
    await _created_behind_a_dead_lease(service)
    service.clock.advance(31)

    assert await dispatcher.run_once() == 7

    assert len(limits.seen) == 7
    assert limits.throttled == []
    gaps = [later - earlier for earlier, later in itertools.pairwise(limits.seen)]
    assert all(gap >= 1 / 3 for gap in gaps), gaps
    assert all(
        len([t for t in limits.seen if start <= t < start + 1]) <= 3 for start in limits.seen
    )
    for escalation_id in ids:
        assert (await service.get(escalation_id))["status"] == "queued"
    assert metric(service, "escalator_task_lookup_rate_limit_wait_seconds_count") == 6
    assert metric(service, "escalator_task_lookup_rate_limit_wait_seconds_sum") == pytest.approx(
        sum(gaps)
    )


async def test_a_429_on_a_lookup_holds_lookups_back_for_retry_after(
    service: Service, clients: list[TaskRouterClient]
) -> None:
    time = VirtualTime()
    limits = _record_lookups(service, time)
    dispatcher = _dispatcher_with(
        service, clients, lookup_limiter=RateLimiter(3, clock=time, sleep=time.sleep)
    )
    escalation_id = await _escalate(service, "throttled")
    [[task_sid]] = (await _created_behind_a_dead_lease(service)).values()
    service.clock.advance(31)
    service.sim.running.state.faults.add(Fault("tasks.list", status=429, retry_after=2))

    await dispatcher.run_once()

    assert len(limits.seen) == 2
    assert limits.seen[1] - limits.seen[0] >= 2  # the next lookup waited for Retry-After
    assert 2.0 in service.waits  # and so did the retry within the lease
    escalation = await service.get(escalation_id)
    assert (escalation["status"], escalation["task_sid"]) == ("queued", task_sid)
    assert _told(await _attempts(service, escalation_id)) == [
        ("task.lookup", AttemptOutcome.TRANSIENT_ERROR, 20429),
        ("task.adopted", AttemptOutcome.FOUND, None),
    ]
    assert metric(service, "escalator_task_lookup_requests_total", result="throttled") == 1


async def test_every_attempt_is_in_the_history_with_its_outcome_and_twilio_code(
    service: Service,
) -> None:
    service.sim.running.state.faults.add(Fault("tasks.create", status=503, times=1))
    escalation_id = await _escalate(service, "history-once")

    await service.dispatcher.run_once()

    entries = await _attempts(service, escalation_id)
    assert _told(entries) == [
        ("task.create_attempt", AttemptOutcome.TRANSIENT_ERROR, 20503),
        ("task.lookup", AttemptOutcome.NOT_FOUND, None),
        ("task.created", AttemptOutcome.CREATED, None),
    ]
    assert entries[0].detail == {"status": 503}
    assert all(entry.at == service.clock() for entry in entries)
    shown = (await service.get(escalation_id))["history"]
    assert [entry["event"] for entry in shown] == [
        "escalation.received",
        "task.create_attempt",
        "task.lookup",
        "task.created",
    ]
    assert [entry["status"] for entry in shown] == ["received", "received", "received", "queued"]
    assert metric(service, "escalator_task_create_attempts_total", outcome="created") == 1
    assert metric(service, "escalator_task_create_attempts_total", outcome="transient_error") == 1


async def test_attempts_that_fail_a_whole_lease_are_saved_with_the_row_given_back(
    service: Service,
) -> None:
    service.sim.running.state.faults.add(Fault("tasks.create", status=502, times=3))
    escalation_id = await _escalate(service, "history-lease")

    await service.dispatcher.run_once()

    failing = ("task.create_attempt", AttemptOutcome.TRANSIENT_ERROR, 20502)
    not_found = ("task.lookup", AttemptOutcome.NOT_FOUND, None)
    assert _told(await _attempts(service, escalation_id)) == [
        failing,
        not_found,
        failing,
        not_found,
        failing,
    ]
    assert (await service.get(escalation_id))["status"] == "received"
    assert await service.store.outbox_backlog() == 1

    service.clock.advance(120)
    assert await service.dispatcher.run_once() == 1

    assert _told(await _attempts(service, escalation_id))[5:] == [
        not_found,
        ("task.created", AttemptOutcome.CREATED, None),
    ]
    assert len(await _tasks(service)) == 1


async def test_a_permanent_4xx_fails_the_escalation_with_its_code_message_metric_and_log(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    service.sim.running.state.faults.add(
        Fault("tasks.create", status=400, code=20001, message="Invalid WorkflowSid")
    )
    escalation_id = await _escalate(service, "refused")
    configure_logging(fmt="json", level="info")
    try:
        await service.dispatcher.run_once()
    finally:
        logging.getLogger().handlers.clear()

    escalation = await service.get(escalation_id)
    assert (escalation["status"], escalation["outcome"]) == ("failed", "twilio_rejected")
    assert escalation["error"]["status"] == 400
    assert escalation["error"]["code"] == 20001
    assert "Invalid WorkflowSid" in escalation["error"]["message"]
    assert _told(await _attempts(service, escalation_id)) == [
        ("task.rejected", AttemptOutcome.REJECTED, 20001)
    ]
    assert metric(service, "escalator_twilio_rejects_total", operation="create", code="20001") == 1
    assert metric(service, "escalator_escalations_finished_total", outcome="twilio_rejected") == 1
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if "{" in line]
    [refusal] = [line for line in logged if line.get("event") == "task.create_refused"]
    assert (refusal["escalation_id"], refusal["code"], refusal["status"]) == (
        escalation_id,
        20001,
        400,
    )
    assert await _tasks(service) == []


async def test_a_refused_lookup_fails_nothing_and_is_looked_up_again_later(
    service: Service,
) -> None:
    limits = _record_lookups(service)
    escalation_id = await _escalate(service, "lookup-refused")
    [[task_sid]] = (await _created_behind_a_dead_lease(service)).values()
    service.clock.advance(31)
    service.sim.running.state.faults.add(Fault("tasks.list", status=400, code=20001))

    await service.dispatcher.run_once()

    # The task may exist: the escalation is not failed, and no create is risked.
    assert len(limits.seen) == 1
    assert (await service.get(escalation_id))["status"] == "received"
    assert _told(await _attempts(service, escalation_id)) == [
        ("task.lookup", AttemptOutcome.REJECTED, 20001)
    ]
    assert metric(service, "escalator_twilio_rejects_total", operation="lookup", code="20001") == 1

    service.clock.advance(120)
    await service.dispatcher.run_once()
    escalation = await service.get(escalation_id)
    assert (escalation["status"], escalation["task_sid"]) == ("queued", task_sid)
    assert len(await _tasks(service)) == 1


async def test_several_tasks_for_one_escalation_adopt_the_oldest_and_delete_none(
    service: Service,
) -> None:
    escalation_id = await _escalate(service, "twins")
    [[oldest, newer]] = (await _created_behind_a_dead_lease(service, copies=2)).values()
    service.clock.advance(31)

    await service.dispatcher.run_once()

    assert (await service.get(escalation_id))["task_sid"] == oldest
    assert {task.sid for task in await _tasks(service)} == {oldest, newer}
    assert metric(service, "escalator_duplicate_tasks_total") == 1
    assert metric(service, "escalator_task_lookups_total", result="multiple") == 1


async def test_a_task_created_while_a_cancel_waits_is_canceled_without_a_lookup(
    service: Service,
) -> None:
    escalation_id = await _escalate(service, "canceled-mid-create")
    faults = service.sim.running.state.faults
    faults.add(Fault("tasks.create", status=None, latency=1.5))
    turn = asyncio.create_task(service.dispatcher.run_once())
    while faults.active:  # the create has reached TaskRouter and is being answered
        await asyncio.sleep(0.01)
    canceled = await service.client.post(f"/escalations/{escalation_id}/cancel", headers=AUTH)
    assert canceled.status == 200
    assert ((await canceled.json())["status"], (await canceled.json())["cancel_requested"]) == (
        "received",
        True,
    )
    assert await turn == 1

    # The create's answer came after the cancel: the task is the escalation's own, and the
    # waiting cancel is told it.
    [task] = await _tasks(service)
    escalation = await service.store.get_escalation(escalation_id)
    assert escalation is not None
    assert (escalation.status, escalation.task_sid, escalation.cancel_requested) == (
        Status.QUEUED,
        task.sid,
        True,
    )
    assert metric(service, "escalator_tasks_after_end_total", how="created") == 0

    # So it is canceled at once, without a lookup, and that settles the client's cancel.
    limits = _record_lookups(service)
    assert await service.dispatcher.run_once() == 1
    workspace = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    assert (await workspace.tasks(task.sid).fetch_async()).assignment_status == "canceled"
    assert limits.seen == []
    assert await service.store.outbox_backlog() == 0
    done = await service.get(escalation_id)
    assert (done["status"], done["outcome"], done["task_sid"]) == (
        "canceled",
        "canceled_by_client",
        task.sid,
    )


async def test_a_task_found_while_a_cancel_waits_is_canceled(service: Service) -> None:
    escalation_id = await _escalate(service, "found-after-end")
    [[task_sid]] = (await _created_behind_a_dead_lease(service)).values()
    canceled = await service.client.post(f"/escalations/{escalation_id}/cancel", headers=AUTH)
    assert canceled.status == 200
    service.clock.advance(31)

    while await service.dispatcher.run_once():
        pass

    workspace = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    assert (await workspace.tasks(task_sid).fetch_async()).assignment_status == "canceled"
    escalation = await service.store.get_escalation(escalation_id)
    assert escalation is not None
    # The task found is the escalation's own; canceling it settled the client's cancel.
    assert (escalation.status, escalation.outcome, escalation.task_sid) == (
        Status.CANCELED,
        Outcome.CANCELED_BY_CLIENT,
        task_sid,
    )
    events = [entry.event for entry in escalation.history]
    assert "task.cancel_not_applied" not in events
    assert len(await _tasks(service)) == 1
    assert await service.store.outbox_backlog() == 0


async def test_a_cancel_after_a_create_lost_its_answer_cancels_the_task_it_made(
    service: Service,
) -> None:
    escalation_id = await _escalate(service, "canceled-after-lost-create")
    [[task_sid]] = (await _created_behind_a_dead_lease(service)).values()
    service.clock.advance(31)  # the dead dispatcher's lease ran out: nobody is creating now

    canceled = await service.client.post(f"/escalations/{escalation_id}/cancel", headers=AUTH)
    assert canceled.status == 200
    while await service.dispatcher.run_once():
        pass

    workspace = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    assert (await workspace.tasks(task_sid).fetch_async()).assignment_status == "canceled"
    assert len(await _tasks(service)) == 1  # and no second task was created
    assert await service.store.outbox_backlog() == 0


async def test_the_rate_limiter_spaces_turns_and_defers_what_would_wait_too_long() -> None:
    time = VirtualTime()
    limiter = RateLimiter(3, clock=time, sleep=time.sleep)
    turns = []
    for _ in range(4):
        await limiter.acquire()
        turns.append(time())
    assert turns[0] == 1_000.0
    assert all(b - a == pytest.approx(limiter.interval) for a, b in itertools.pairwise(turns))
    assert limiter.interval > 1 / 3
    with pytest.raises(LookupDeferred) as deferred:
        await limiter.acquire(max_wait=0.1)
    assert deferred.value.retry_after == pytest.approx(limiter.interval)
    # A refused turn is not spent: the next caller gets it.
    assert await limiter.acquire() == pytest.approx(limiter.interval)


async def test_a_429_pushes_back_turns_already_waiting() -> None:
    time = VirtualTime()
    limiter = RateLimiter(3, clock=time, sleep=time.sleep)
    await limiter.acquire()
    waiting = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)  # it waits for its turn, a third of a second away
    limiter.hold_off(5)
    waited = await waiting
    assert waited >= 5
    # The next turn is spaced from the one that waited, not squeezed in behind it.
    assert await limiter.acquire() == pytest.approx(limiter.interval)
    limiter.hold_off(5)
    with pytest.raises(LookupDeferred) as deferred:
        await limiter.acquire(max_wait=1)
    assert deferred.value.retry_after == pytest.approx(5)


async def test_a_lookup_reads_every_page_each_in_its_turn(
    service: Service, clients: list[TaskRouterClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("escalator.taskrouter.client._LOOKUP_PAGE_SIZE", 1)
    time = VirtualTime()
    limits = _record_lookups(service, time)
    taskrouter = _client_with(
        service, clients, lookup_limiter=RateLimiter(3, clock=time, sleep=time.sleep)
    )
    escalation_id = await _escalate(service, "paged")
    [created] = (await _created_behind_a_dead_lease(service, copies=3)).values()

    found = await taskrouter.look_up_tasks([escalation_id])

    assert found.tasks == {escalation_id: tuple(created)}  # oldest first, across pages
    assert found.requests == len(limits.seen) == 3
    assert limits.throttled == []
    assert found.waited == pytest.approx(2 * (limits.seen[1] - limits.seen[0]))
