"""The Events API through the SDK: filters, time windows, paging and 30-day retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from twilio.base.exceptions import TwilioRestException

from tests.integration.simulator.conftest import World


async def _history(world: World) -> tuple[str, str, str, str, str]:
    queue = await world.queue("Q")
    flow = await world.workflow([], default=queue)
    worker = await world.worker("ann")
    task = await world.task(flow)
    reservation = await world.pending(task.sid)
    await (
        world.ws.tasks(task.sid)
        .reservations(reservation.sid)
        .update_async(reservation_status="accepted")
    )
    return queue, flow, worker, task.sid, reservation.sid


async def test_events_are_filtered_by_resource_and_type(world: World) -> None:
    queue, flow, worker, task, reservation = await _history(world)
    events = world.ws.events

    async def types(**filters: str) -> list[str]:
        return [e.event_type for e in await events.list_async(**filters)]

    # Newest first.
    assert (await types(task_sid=task))[0] == "reservation.accepted"
    assert await types(reservation_sid=reservation) == [
        "reservation.accepted",
        "reservation.created",
    ]
    assert await types(event_type="task.created") == ["task.created"]
    assert set(await types(worker_sid=worker)) == {
        "worker.created",
        "reservation.created",
        "reservation.accepted",
    }
    assert "task-queue.entered" in await types(task_queue_sid=queue)
    assert "workflow.entered" in await types(workflow_sid=flow)
    [accepted] = await events.list_async(event_type="reservation.accepted")
    fetched = await events(accepted.sid).fetch_async()
    assert fetched.sid.startswith("EV")
    assert (fetched.resource_type, fetched.resource_sid) == ("Reservation", reservation)
    assert fetched.event_data["task_sid"] == task
    assert fetched.event_data["worker_sid"] == worker


async def test_minutes_defaults_to_15_and_dates_bound_the_window(world: World) -> None:
    _, _, _, task, _ = await _history(world)
    created_at = world.sim.clock.now()
    await world.sim.advance(16 * 60)
    events = world.ws.events
    assert await events.list_async(task_sid=task) == []
    assert len(await events.list_async(task_sid=task, minutes=20)) > 0
    since = await events.list_async(task_sid=task, start_date=created_at - timedelta(seconds=1))
    assert len(since) == len(await events.list_async(task_sid=task, minutes=20))
    before = await events.list_async(
        start_date=created_at - timedelta(hours=1), end_date=created_at - timedelta(seconds=1)
    )
    assert before == []


async def test_events_page_with_page_size(world: World) -> None:
    await _history(world)
    events = world.ws.events
    everything = [e.sid for e in await events.list_async()]
    paged = [e.sid for e in await events.list_async(page_size=2)]
    assert paged == everything
    assert len(everything) > 4


async def test_events_are_kept_30_days(world: World) -> None:
    await _history(world)
    [created] = await world.ws.events.list_async(event_type="task.created")
    await world.sim.advance(29 * 86_400)
    assert (await world.ws.events(created.sid).fetch_async()).sid == created.sid
    await world.sim.advance(2 * 86_400)
    with pytest.raises(TwilioRestException) as raised:
        await world.ws.events(created.sid).fetch_async()
    assert raised.value.status == 404


async def test_subscribers_see_each_event_synchronously(world: World) -> None:
    seen: list[str] = []
    unsubscribe = world.sim.state.events.subscribe(lambda e: seen.append(e.event_type))
    queue = await world.queue("Q")
    flow = await world.workflow([], default=queue)
    await world.task(flow)
    unsubscribe()
    await world.task(flow)
    assert seen == [
        "task.created",
        "workflow.entered",
        "workflow.target-matched",
        "task-queue.entered",
    ]


async def test_a_subscriber_can_accept_reservations_as_they_are_created(world: World) -> None:
    def accept(event: object) -> None:
        if getattr(event, "event_type", "") == "reservation.created":
            world.sim.engine.accept(world.sid, event.get("ReservationSid"))  # type: ignore[attr-defined]

    world.sim.state.events.subscribe(accept)
    queue = await world.queue("Q", max_reserved_workers=2)
    flow = await world.workflow([], default=queue)
    await world.worker("ann")
    await world.worker("bob")
    task = await world.task(flow)
    assert (await world.fetch(task.sid)).assignment_status == "assigned"
    assert len(await world.reservations(task.sid)) == 1
