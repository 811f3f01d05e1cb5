"""The reconciler: with every callback lost, escalations still reach TaskRouter's final state."""

from __future__ import annotations

import json
from typing import Any

import pytest

from escalator.domain.events import CANCEL_REASON
from escalator.reconciler import Reconciler
from escalator.routing import load_routing
from escalator.simulator import CallbackFaults, Fault
from tests.integration.conftest import Service, ServiceFactory
from tests.integration.webhooks import connect, escalate, metric, post_signed, settle

pytestmark = pytest.mark.virtual_clock

STALE_AFTER = 60.0
# Lifecycle page: TaskRouter deletes an ended task about 5 minutes later.
DELETED_AFTER = 301
TTL = 3600  # the bundled routing file's timeout for reason `general`
RESERVATION_TIMEOUT = 30  # the bundled routing file's workflow lets an offer wait 30 s
KINDS = ("completed", "assigned", "reject_then_accept", "canceled", "ttl")


def _reconciler(service: Service, waits: list[float] | None = None, **options: Any) -> Reconciler:
    async def sleep(seconds: float) -> None:
        if waits is not None:
            waits.append(seconds)
        service.clock.advance(seconds)

    return Reconciler(
        store=service.store,
        taskrouter=service.taskrouter,
        clock=service.clock,
        metrics=service.metrics,
        cascade=load_routing().file.cascade,
        stale_after=STALE_AFTER,
        sleep=sleep,
        **options,
    )


async def _advance(service: Service, seconds: float) -> None:
    """Move TaskRouter's clock and ours together."""
    await service.sim.running.advance(seconds)
    await service.sim.running.state.callbacks.drain()
    service.clock.now = service.sim.running.clock.now()


async def _lose_every_callback(service: Service) -> None:
    service.clock.now = service.sim.running.clock.now()
    await connect(service)
    service.sim.running.state.callbacks.set_faults(CallbackFaults(drop=1.0), seed=5)


def _ws(service: Service) -> Any:
    return service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)


async def _offer(service: Service, task_sid: str) -> Any:
    [pending] = (
        await _ws(service).tasks(task_sid).reservations.list_async(reservation_status="pending")
    )
    return pending


async def _answer(service: Service, task_sid: str, status: str) -> str:
    offer = await _offer(service, task_sid)
    await (
        _ws(service).tasks(task_sid).reservations(offer.sid).update_async(reservation_status=status)
    )
    return str(offer.worker_sid)


async def _play(service: Service, kind: str, task_sid: str) -> None:
    """Drive one task through TaskRouter as its kind says (every callback is lost)."""
    task = _ws(service).tasks(task_sid)
    if kind == "completed":
        await _answer(service, task_sid, "accepted")
        await task.update_async(assignment_status="completed", reason="resolved")
    elif kind == "assigned":
        await _answer(service, task_sid, "accepted")
    elif kind == "reject_then_accept":
        await _answer(service, task_sid, "rejected")
        await _answer(service, task_sid, "accepted")
    elif kind == "canceled":
        await task.update_async(assignment_status="canceled", reason=CANCEL_REASON)


async def _activity(service: Service, worker_sid: str) -> str:
    return str((await _ws(service).workers(worker_sid).fetch_async()).activity_name)


def _truth(service: Service, task_sid: str) -> tuple[str, str | None]:
    """The status and worker the simulator's own event record implies for a task."""
    record = [r for r in service.sim.running.state.events if r.get("TaskSid") == task_sid]
    types = [r.event_type for r in record]
    accepted = [r.get("WorkerSid") for r in record if r.event_type == "reservation.accepted"]
    worker = accepted[-1] if accepted else None
    if "task.completed" in types:
        return "completed", worker
    if "task.canceled" in types:
        return "canceled", worker
    return ("assigned" if accepted else "queued"), worker


def _facts(escalation: dict[str, Any]) -> tuple[Any, ...]:
    """What an escalation says, whatever order, key or number of times its facts arrived."""
    facts = {(entry["event"], entry.get("reservation_sid")) for entry in escalation["history"]}
    worker = (escalation.get("worker") or {}).get("sid")
    return escalation["status"], escalation["outcome"], worker, frozenset(facts)


EXPECTED = {
    "completed": ("completed", "completed"),
    "assigned": ("assigned", None),
    "reject_then_accept": ("assigned", None),
    "canceled": ("canceled", "canceled_by_client"),
    "ttl": ("canceled", "ttl_expired"),
}


@pytest.mark.parametrize("count", [30])
async def test_with_every_callback_lost_the_reconciler_reaches_taskrouters_final_state(
    service: Service, count: int
) -> None:
    await _lose_every_callback(service)
    ws = _ws(service)
    available = service.sim.workspace.activities["Available"]
    for n in range(count):  # enough workers for every task that keeps one
        await ws.workers.create_async(
            friendly_name=f"Extra{n}",
            activity_sid=available,
            attributes=json.dumps({"skills": [], "languages": ["en"]}),
        )
    kinds = {f"rc-{n}": KINDS[n % len(KINDS)] for n in range(count)}
    tasks: dict[str, tuple[str, str]] = {}
    for conversation, kind in kinds.items():
        if kind == "ttl":
            continue
        escalation_id = await escalate(service, conversation, reason_code="general")
        task_sid = (await service.get(escalation_id))["task_sid"]
        await _play(service, kind, task_sid)
        tasks[escalation_id] = (kind, task_sid)
    # Completed and canceled tasks are deleted: only the Events API still knows them.
    await _advance(service, DELETED_AFTER)
    for conversation, kind in kinds.items():
        if kind == "ttl":
            escalation_id = await escalate(service, conversation, reason_code="general")
            tasks[escalation_id] = (kind, (await service.get(escalation_id))["task_sid"])
    # Nobody answers: offers time out (workers fall to Offline) until the TTL cancels the task.
    await _advance(service, TTL + 1)

    deliveries = service.sim.running.state.callbacks.deliveries
    assert deliveries
    assert {d.outcome for d in deliveries} == {"dropped"}
    for escalation_id in tasks:
        assert (await service.get(escalation_id))["status"] == "queued"
    gone = {
        kind
        for kind, task_sid in tasks.values()
        if await service.taskrouter.fetch_task(task_sid) is None  # type: ignore[arg-type]
    }
    assert gone == {"completed", "canceled"}
    timeouts = service.sim.running.state.events.of_type("reservation.timeout")
    assert timeouts  # the TTL tasks' offers timed out, long before the reconciler looks

    reconciler = _reconciler(service)
    await reconciler.run(burst=True)

    for escalation_id, (kind, task_sid) in tasks.items():
        escalation = await service.get(escalation_id)
        assert (escalation["status"], escalation["outcome"]) == EXPECTED[kind], (kind, escalation)
        status, worker = _truth(service, task_sid)
        assert escalation["status"] == status
        assert (escalation.get("worker") or {}).get("sid") == worker
        if kind == "reject_then_accept":
            offers = [e["outcome"] for e in escalation["history"] if e["outcome"]]
            assert offers == ["rejected", "accepted"]
    assert metric(service, "escalator_reconciled_escalations_total", result="changed") == count
    # Old timeouts reconciled long after the fact put nobody back (reset window).
    assert await service.store.outbox_backlog() == 0
    snapshot = {escalation_id: await service.get(escalation_id) for escalation_id in tasks}

    # Reconciling again re-reads the escalations still open and changes nothing.
    service.clock.advance(STALE_AFTER)
    await reconciler.run(burst=True)
    open_ones = sum(kind in ("assigned", "reject_then_accept") for kind, _ in tasks.values())
    assert metric(service, "escalator_reconciled_escalations_total", result="unchanged") == (
        open_ones
    )
    for escalation_id, before in snapshot.items():
        assert await service.get(escalation_id) == before

    # The lost callbacks arrive after all, late and by another key: nothing changes.
    ours = {task_sid for _, task_sid in tasks.values()}
    for record in service.sim.running.state.events:
        if record.get("TaskSid") in ours:
            response = await post_signed(service, "/taskrouter/events", dict(record.fields))
            assert response.status == 204
    for escalation_id, before in snapshot.items():
        assert _facts(await service.get(escalation_id)) == _facts(before)
    assert await service.store.outbox_backlog() == 0


async def test_a_429_backs_off_and_the_next_turn_finishes_the_job(service: Service) -> None:
    await _lose_every_callback(service)
    ids = []
    for n in range(3):
        escalation_id = await escalate(service, f"throttled-{n}", reason_code="general")
        await _answer(service, (await service.get(escalation_id))["task_sid"], "accepted")
        ids.append(escalation_id)
    reconciler = _reconciler(service, concurrency=1)
    assert await reconciler.run_once() == 0  # nothing is stale yet
    await _advance(service, STALE_AFTER)
    service.sim.running.state.faults.add(
        Fault(operation="tasks.fetch", status=429, retry_after=7, times=1)
    )

    assert await reconciler.run_once() == 3
    assert metric(service, "escalator_reconcile_errors_total", kind="throttled") == 1
    assert [(await service.get(i))["status"] for i in ids] == ["queued"] * 3
    # TaskRouter asked for 7 s: the rest of the batch was not even tried, nor is it now.
    assert metric(service, "escalator_reconciled_escalations_total", result="changed") == 0
    assert await reconciler.run_once() == 0

    waits: list[float] = []
    reconciler = _reconciler(service, waits, concurrency=1)
    service.sim.running.state.faults.add(
        Fault(operation="tasks.fetch", status=429, retry_after=7, times=1)
    )
    service.clock.advance(7)
    await reconciler.run(burst=True)
    assert waits == [7.0]
    assert [(await service.get(i))["status"] for i in ids] == ["assigned"] * 3
    assert metric(service, "escalator_reconcile_errors_total", kind="throttled") == 2
    assert metric(service, "escalator_reconciled_escalations_total", result="changed") == 3


async def test_facts_a_callback_already_brought_are_not_applied_again(service: Service) -> None:
    await connect(service)
    service.clock.now = service.sim.running.clock.now()
    escalation_id = await escalate(service, "both-ways", reason_code="general")
    task_sid = (await service.get(escalation_id))["task_sid"]
    await _answer(service, task_sid, "accepted")
    await service.sim.running.state.callbacks.drain()
    before = await service.get(escalation_id)
    assert before["status"] == "assigned"
    await _advance(service, STALE_AFTER + 1)

    await _reconciler(service).run(burst=True)
    after = await service.get(escalation_id)
    assert after == before
    assert metric(service, "escalator_reconciled_escalations_total", result="unchanged") == 1


async def test_a_task_nobody_remembers_is_counted_not_found(service: Service) -> None:
    await _lose_every_callback(service)
    escalation_id = await escalate(service, "forgotten", reason_code="general")
    task_sid = (await service.get(escalation_id))["task_sid"]
    await _ws(service).tasks(task_sid).delete_async()
    # The Events API keeps 30 days; the task.deleted event is gone with them.
    await _advance(service, 31 * 24 * 3600)

    await _reconciler(service).run(burst=True)
    assert (await service.get(escalation_id))["status"] == "queued"
    assert metric(service, "escalator_reconciled_escalations_total", result="not_found") == 1

    # Not re-read at every interval: an hour later, once more.
    await _advance(service, 59 * 60)
    await _reconciler(service).run(burst=True)
    assert metric(service, "escalator_reconciled_escalations_total", result="not_found") == 1
    await _advance(service, 2 * 60)
    await _reconciler(service).run(burst=True)
    assert metric(service, "escalator_reconciled_escalations_total", result="not_found") == 2


async def test_a_fresh_timeout_found_by_the_reconciler_puts_the_worker_back(
    service_factory: ServiceFactory, database_url: str
) -> None:
    service = await service_factory(database_url)
    await _lose_every_callback(service)
    escalation_id = await escalate(service, "fresh-timeout", reason_code="general")
    offer = await _offer(service, (await service.get(escalation_id))["task_sid"])
    await _advance(service, RESERVATION_TIMEOUT + 1)
    assert await _activity(service, offer.worker_sid) == "Offline"
    service.clock.advance(STALE_AFTER)  # the timeout is 60 s old: inside the reset window

    await _reconciler(service).run(burst=True)
    await settle(service)
    escalation = await service.get(escalation_id)
    timed_out = [e for e in escalation["history"] if e["event"] == "reservation.timeout"]
    assert [e["reservation_sid"] for e in timed_out][:1] == [offer.sid]
    assert await _activity(service, offer.worker_sid) == "Available"
    assert metric(service, "escalator_worker_resets_total", result="done") >= 1


async def test_a_lost_timeout_of_a_task_that_then_ended_elsewhere_still_puts_the_worker_back(
    service_factory: ServiceFactory, database_url: str
) -> None:
    """The first offer times out and both its callbacks are lost; another worker takes the task
    and completes it, and those callbacks arrive: the escalation ends without ever hearing of
    the first worker, whom only the reconciler's sweep of recent timeouts can put back."""
    service = await service_factory(database_url)
    await _lose_every_callback(service)
    escalation_id = await escalate(service, "lost-timeout-then-completed", reason_code="general")
    task_sid = (await service.get(escalation_id))["task_sid"]
    first = await _offer(service, task_sid)
    await _advance(service, RESERVATION_TIMEOUT + 1)
    assert await _activity(service, first.worker_sid) == "Offline"
    service.sim.running.state.callbacks.set_faults(CallbackFaults(), seed=5)
    second = await _answer(service, task_sid, "accepted")
    await _ws(service).tasks(task_sid).update_async(assignment_status="completed", reason="done")
    await settle(service)
    ended = await service.get(escalation_id)
    assert (ended["status"], ended["worker"]["sid"]) == ("completed", second)
    assert first.sid not in {entry["reservation_sid"] for entry in ended["history"]}

    reconciler = _reconciler(service)
    assert await reconciler.run_once() == 0  # nothing open to re-read: only the sweep acts
    await settle(service)
    assert await _activity(service, first.worker_sid) == "Available"
    after = await service.get(escalation_id)
    assert (after["status"], after["outcome"]) == ("completed", "completed")
    timed_out = [e for e in after["history"] if e["event"] == "reservation.timeout"]
    assert [(e["reservation_sid"], e["worker_sid"]) for e in timed_out] == [
        (first.sid, first.worker_sid)
    ]
    assert metric(service, "escalator_reconciler_timeouts_swept_total") == 1
    # Swept again next interval: nothing new, no second reset.
    service.clock.advance(20)
    await reconciler.run_once()
    await settle(service)
    assert metric(service, "escalator_reconciler_timeouts_swept_total") == 1
    assert metric(service, "escalator_worker_resets_total", result="done") == 1
