"""Reservations through both REST paths: accept, reject, timeout, cancel, rescind, complete."""

from __future__ import annotations

import pytest
from twilio.base.exceptions import TwilioRestException

from tests.integration.simulator.conftest import World


async def _setup(world: World, **queue: object) -> tuple[str, str]:
    queue_sid = await world.queue("Q", **queue)
    flow = await world.workflow([], default=queue_sid, reservation_timeout=30)
    return queue_sid, flow


async def test_accept_through_the_task_path_assigns_the_task(world: World) -> None:
    _, flow = await _setup(world)
    worker = await world.worker("ann")
    task = await world.task(flow)
    reservation = await world.pending(task.sid)
    assert reservation.sid.startswith("WR")
    assert (reservation.worker_sid, reservation.worker_name) == (worker, "ann")
    accepted = (
        await world.ws.tasks(task.sid)
        .reservations(reservation.sid)
        .update_async(reservation_status="accepted")
    )
    assert accepted.reservation_status == "accepted"
    assert (await world.fetch(task.sid)).assignment_status == "assigned"
    assert world.types(ReservationSid=reservation.sid) == [
        "reservation.created",
        "reservation.accepted",
    ]
    # A reservation that is no longer pending cannot be accepted again.
    with pytest.raises(TwilioRestException) as raised:
        await (
            world.ws.tasks(task.sid)
            .reservations(reservation.sid)
            .update_async(reservation_status="accepted")
        )
    assert raised.value.status == 400


async def test_reject_through_the_worker_path_offers_the_task_to_someone_else(
    world: World,
) -> None:
    _, flow = await _setup(world)
    ann = await world.worker("ann")
    bob = await world.worker("bob")
    task = await world.task(flow)
    first = await world.pending(task.sid)
    assert first.worker_sid == ann
    rejected = (
        await world.ws.workers(ann)
        .reservations(first.sid)
        .update_async(
            reservation_status="rejected", worker_activity_sid=world.activities["Unavailable"]
        )
    )
    assert rejected.reservation_status == "rejected"
    assert (await world.ws.workers(ann).fetch_async()).activity_name == "Unavailable"
    second = await world.pending(task.sid)
    assert second.worker_sid == bob
    await world.ws.workers(bob).reservations(second.sid).update_async(reservation_status="rejected")
    # A worker who rejected the task is not offered it again, even when available.
    await world.set_activity(ann, "Available")
    assert (await world.fetch(task.sid)).assignment_status == "pending"
    listed = await world.ws.workers(ann).reservations.list_async(reservation_status="rejected")
    assert [r.sid for r in listed] == [first.sid]


async def test_reservation_timeout_moves_the_worker_to_the_timeout_activity(
    world: World,
) -> None:
    timed_out = await world.ws.activities.create_async(friendly_name="Timed out", available=False)
    await world.ws.update_async(timeout_activity_sid=timed_out.sid)
    _, flow = await _setup(world)
    worker = await world.worker("ann")
    task = await world.task(flow)
    reservation = await world.pending(task.sid)
    await world.sim.advance(29)
    assert (await world.pending(task.sid)).sid == reservation.sid
    await world.sim.advance(1)
    fetched = await world.ws.tasks(task.sid).reservations(reservation.sid).fetch_async()
    assert fetched.reservation_status == "timeout"
    assert (await world.fetch(task.sid)).assignment_status == "pending"
    assert (await world.ws.workers(worker).fetch_async()).activity_sid == timed_out.sid
    assert world.types(WorkerSid=worker)[-2:] == ["reservation.timeout", "worker.activity.update"]


async def test_canceling_a_reserved_task_cancels_its_reservation(world: World) -> None:
    _, flow = await _setup(world)
    await world.worker("ann")
    task = await world.task(flow)
    reservation = await world.pending(task.sid)
    await world.ws.tasks(task.sid).update_async(assignment_status="canceled", reason="hung up")
    fetched = await world.ws.tasks(task.sid).reservations(reservation.sid).fetch_async()
    assert fetched.reservation_status == "canceled"
    assert world.types(TaskSid=task.sid)[-2:] == ["task.canceled", "reservation.canceled"]
    [canceled] = world.sim.state.events.of_type("task.canceled", TaskSid=task.sid)
    assert canceled.get("TaskCanceledReason") == "hung up"


async def test_other_reservations_are_rescinded_when_one_worker_accepts(world: World) -> None:
    _, flow = await _setup(world, max_reserved_workers=2)
    ann = await world.worker("ann")
    bob = await world.worker("bob")
    task = await world.task(flow)
    pending = await world.reservations(task.sid, reservation_status="pending")
    assert {r.worker_sid for r in pending} == {ann, bob}
    bobs = next(r for r in pending if r.worker_sid == bob)
    anns = next(r for r in pending if r.worker_sid == ann)
    await world.ws.workers(bob).reservations(bobs.sid).update_async(reservation_status="accepted")
    fetched = await world.ws.workers(ann).reservations(anns.sid).fetch_async()
    assert fetched.reservation_status == "rescinded"
    assert "reservation.rescinded" in world.types(ReservationSid=anns.sid)


async def test_completing_the_reservation_completes_the_task(world: World) -> None:
    _, flow = await _setup(world)
    await world.worker("ann")
    task = await world.task(flow)
    reservation = await world.pending(task.sid)
    context = world.ws.tasks(task.sid).reservations(reservation.sid)
    await context.update_async(reservation_status="accepted")
    wrapping = await context.update_async(reservation_status="wrapping")
    assert wrapping.reservation_status == "wrapping"
    assert (await world.fetch(task.sid)).assignment_status == "wrapping"
    completed = await context.update_async(reservation_status="completed")
    assert completed.reservation_status == "completed"
    assert (await world.fetch(task.sid)).assignment_status == "completed"
    assert world.types(TaskSid=task.sid)[-5:] == [
        "reservation.accepted",
        "task.wrapup",
        "reservation.wrapup",
        "task.completed",
        "reservation.completed",
    ]


async def test_completing_the_task_completes_the_reservation_and_frees_the_worker(
    world: World,
) -> None:
    _, flow = await _setup(world)
    await world.worker("ann")
    first = await world.task(flow)
    second = await world.task(flow)
    reservation = await world.pending(first.sid)
    await (
        world.ws.tasks(first.sid)
        .reservations(reservation.sid)
        .update_async(reservation_status="accepted")
    )
    assert (await world.fetch(second.sid)).assignment_status == "pending"
    await world.ws.tasks(first.sid).update_async(assignment_status="completed", reason="resolved")
    fetched = await world.ws.tasks(first.sid).reservations(reservation.sid).fetch_async()
    assert fetched.reservation_status == "completed"
    [event] = world.sim.state.events.of_type("task.completed", TaskSid=first.sid)
    assert event.get("TaskCompletedReason") == "resolved"
    assert (await world.fetch(second.sid)).assignment_status == "reserved"


async def test_dequeue_instruction_is_recorded_and_accepts(world: World) -> None:
    _, flow = await _setup(world)
    await world.worker("ann")
    task = await world.task(flow)
    reservation = await world.pending(task.sid)
    updated = (
        await world.ws.tasks(task.sid)
        .reservations(reservation.sid)
        .update_async(
            instruction="dequeue", dequeue_from="+15550100", dequeue_post_work_activity_sid="WA1"
        )
    )
    assert updated.reservation_status == "accepted"
    stored = world.workspace.reservations[reservation.sid]
    assert stored.instruction == "dequeue"
    assert stored.instruction_params == {
        "DequeueFrom": "+15550100",
        "DequeuePostWorkActivitySid": "WA1",
    }


async def test_if_match_protects_reservation_updates(world: World) -> None:
    _, flow = await _setup(world)
    await world.worker("ann")
    task = await world.task(flow)
    reservation = await world.pending(task.sid)
    context = world.ws.tasks(task.sid).reservations(reservation.sid)
    info = await context.fetch_with_http_info_async()
    etag = {k.lower(): v for k, v in info.headers.items()}["etag"]
    world.sim.engine.reject(world.sid, reservation.sid)
    with pytest.raises(TwilioRestException) as raised:
        await context.update_async(if_match=etag, reservation_status="accepted")
    assert raised.value.status == 412


async def test_terminal_tasks_are_deleted_five_minutes_later(world: World) -> None:
    _, flow = await _setup(world)
    task = await world.task(flow)
    await world.ws.tasks(task.sid).update_async(assignment_status="canceled", reason="gone")
    await world.sim.advance(299)
    assert (await world.fetch(task.sid)).assignment_status == "canceled"
    await world.sim.advance(1)
    with pytest.raises(TwilioRestException) as raised:
        await world.fetch(task.sid)
    assert raised.value.status == 404
    assert world.types(TaskSid=task.sid)[-1] == "task.deleted"
