"""TaskQueue, Workflow and Workspace statistics read through the real async twilio SDK."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException

from tests.integration.simulator.conftest import World


class Desk:
    """Support and Sales queues; alice and bob (support) available, carol offline, dave sales."""

    def __init__(self, world: World, support: str, sales: str, flow: str) -> None:
        self.world = world
        self.support = support
        self.sales = sales
        self.flow = flow
        self.workers: dict[str, str] = {}

    def queue(self, sid: str) -> Any:
        return self.world.ws.task_queues(sid)

    async def realtime(self, sid: str, **kwargs: Any) -> Any:
        return await self.queue(sid).real_time_statistics().fetch_async(**kwargs)

    async def cumulative(self, sid: str, **kwargs: Any) -> Any:
        return await self.queue(sid).cumulative_statistics().fetch_async(**kwargs)


async def _desk(world: World, *, reservation_timeout: int = 30) -> Desk:
    support = await world.queue("Support", "skills HAS 'support'")
    sales = await world.queue("Sales", "skills HAS 'sales'")
    flow = await world.workflow(
        [{"expression": "type == 'sales'", "targets": [{"queue": sales}]}],
        default=support,
        reservation_timeout=reservation_timeout,
    )
    desk = Desk(world, support, sales, flow)
    for name, skills, available in (
        ("alice", ["support"], True),
        ("bob", ["support"], True),
        ("carol", ["support"], False),
        ("dave", ["sales"], True),
    ):
        desk.workers[name] = await world.worker(name, available, skills=skills)
    return desk


async def _answer(world: World, task_sid: str, status: str) -> Any:
    reservation = await world.pending(task_sid)
    return (
        await world.ws.tasks(task_sid)
        .reservations(reservation.sid)
        .update_async(reservation_status=status)
    )


async def test_realtime_counts_available_and_eligible_workers_and_tasks_by_status(
    world: World,
) -> None:
    desk = await _desk(world, reservation_timeout=300)
    first = await world.task(desk.flow, type="support")
    second = await world.task(desk.flow, type="support")
    await world.task(desk.flow, type="support", _priority=5)  # nobody left: it waits
    await _answer(world, first.sid, "accepted")

    stats = await desk.realtime(desk.support)

    # alice holds an accepted task but is still in Available: Twilio counts her as available.
    assert (stats.total_available_workers, stats.total_eligible_workers) == (2, 3)
    by_activity = {a["friendly_name"]: a["workers"] for a in stats.activity_statistics}
    assert by_activity == {"Offline": 1, "Unavailable": 0, "Available": 2}
    assert stats.tasks_by_status == {
        "pending": 1,
        "reserved": 1,
        "assigned": 1,
        "wrapping": 0,
        "canceled": 0,
        "completed": 0,
    }
    assert stats.tasks_by_priority == {"0": 2, "5": 1}
    assert stats.total_tasks == 3
    assert stats.task_queue_sid == desk.support
    assert (await desk.realtime(desk.sales)).total_eligible_workers == 1

    await world.sim.advance(42)
    stats = await desk.realtime(desk.support)
    # The oldest task still waiting is the reserved one; the assigned one no longer waits.
    assert (stats.longest_task_waiting_sid, stats.longest_task_waiting_age) == (second.sid, 42)
    assert stats.longest_relative_task_sid_in_queue == second.sid
    assert stats.longest_relative_task_age_in_queue == 42


async def test_realtime_is_empty_for_another_task_channel(world: World) -> None:
    desk = await _desk(world)
    await world.task(desk.flow, type="support")

    stats = await desk.realtime(desk.support, task_channel="chat")

    assert stats.total_tasks == 0
    assert stats.longest_task_waiting_sid is None
    assert (await desk.realtime(desk.support, task_channel="default")).total_tasks == 1


async def _history(world: World, desk: Desk) -> dict[str, Any]:
    """Accept one, reject one, let one time out, cancel two; returns the tasks."""
    accepted = await world.task(desk.flow, type="support")  # alice
    rejected = await world.task(desk.flow, type="support")  # bob
    await world.sim.advance(5)
    await _answer(world, accepted.sid, "accepted")
    await _answer(world, rejected.sid, "rejected")
    timed_out = await world.task(desk.flow, type="support")  # bob again
    await world.pending(timed_out.sid)
    await world.sim.advance(30)  # bob's reservation times out; he goes Offline
    await world.ws.tasks(rejected.sid).update_async(assignment_status="canceled", reason="gone")
    sale = await world.task(desk.flow, type="sales")  # dave, canceled while reserved
    await world.ws.tasks(sale.sid).update_async(assignment_status="canceled", reason="gone")
    return {"accepted": accepted, "rejected": rejected, "timed_out": timed_out, "sale": sale}


async def test_cumulative_counts_reservations_tasks_and_wait_durations(world: World) -> None:
    desk = await _desk(world)
    await _history(world, desk)

    stats = await desk.cumulative(desk.support, minutes=15, split_by_wait_time="5,10,60")

    reservations = (
        stats.reservations_created,
        stats.reservations_accepted,
        stats.reservations_rejected,
        stats.reservations_timed_out,
        stats.reservations_canceled,
        stats.reservations_rescinded,
    )
    assert reservations == (3, 1, 1, 1, 0, 0)
    assert (stats.tasks_entered, stats.tasks_canceled, stats.tasks_moved) == (3, 1, 0)
    assert stats.avg_task_acceptance_time == 5
    assert stats.wait_duration_until_accepted == {"avg": 5, "min": 5, "max": 5, "total": 5}
    assert stats.wait_duration_in_queue_until_accepted["total"] == 5
    assert stats.wait_duration_until_canceled == {"avg": 35, "min": 35, "max": 35, "total": 35}
    assert stats.split_by_wait_time["10"] == {
        "above": {"tasks_canceled": 1, "reservations_accepted": 0},
        "below": {"tasks_canceled": 0, "reservations_accepted": 1},
    }
    assert stats.split_by_wait_time["60"]["below"]["tasks_canceled"] == 1
    # A wait equal to the threshold is within it (our reading; Twilio does not say).
    assert stats.split_by_wait_time["5"]["below"]["reservations_accepted"] == 1
    sales = await desk.cumulative(desk.sales)
    assert (sales.reservations_canceled, sales.tasks_canceled, sales.tasks_entered) == (1, 1, 1)
    assert sales.split_by_wait_time is None


async def test_cumulative_window_excludes_older_events(world: World) -> None:
    desk = await _desk(world)
    start = world.sim.clock.now()
    await _history(world, desk)
    await world.sim.advance(600)
    await world.task(desk.flow, type="support")  # nobody is free: it waits

    recent = await desk.cumulative(desk.support, minutes=1)
    assert (recent.tasks_entered, recent.reservations_created, recent.tasks_canceled) == (1, 0, 0)
    assert recent.end_time - recent.start_time == timedelta(minutes=1)
    assert recent.wait_duration_until_accepted == {"avg": 0, "min": 0, "max": 0, "total": 0}
    everything = await desk.cumulative(desk.support, minutes=15)
    assert (everything.tasks_entered, everything.reservations_created) == (4, 3)
    first_seconds = await desk.cumulative(
        desk.support, start_date=start, end_date=start + timedelta(seconds=4)
    )
    assert (first_seconds.reservations_created, first_seconds.reservations_accepted) == (2, 0)
    assert first_seconds.start_time == start


async def test_a_task_moved_by_a_target_timeout_waits_less_in_its_new_queue(world: World) -> None:
    desk = await _desk(world)
    nobody = await world.queue("Nobody", "skills HAS 'none'")
    flow = await world.workflow(
        [
            {
                "expression": "type == 'overflow'",
                "targets": [{"queue": nobody, "timeout": 10}, {"queue": desk.support}],
            }
        ]
    )
    task = await world.task(flow, type="overflow")
    await world.sim.advance(10)  # moves to Support, where alice is offered it
    await world.sim.advance(3)
    await _answer(world, task.sid, "accepted")

    stats = await desk.cumulative(desk.support)

    assert (stats.tasks_entered, stats.tasks_moved) == (1, 1)
    assert stats.wait_duration_until_accepted["total"] == 13
    assert stats.wait_duration_in_queue_until_accepted["total"] == 3
    assert (await desk.cumulative(nobody)).tasks_entered == 1


async def test_combined_queue_statistics_and_the_list(world: World) -> None:
    desk = await _desk(world)
    await _history(world, desk)

    combined = await desk.queue(desk.support).statistics().fetch_async(minutes=15)
    listed = await world.ws.task_queues.statistics.list_async(friendly_name="Sales")

    assert combined.cumulative["reservations_timed_out"] == 1
    assert combined.realtime["total_eligible_workers"] == 3
    assert combined.realtime["total_available_workers"] == 1  # bob timed out to Offline
    assert [s.task_queue_sid for s in listed] == [desk.sales]
    assert listed[0].cumulative["reservations_canceled"] == 1


async def test_workflow_statistics_count_workflow_timeouts(world: World) -> None:
    empty = await world.queue("Nobody", "skills HAS 'none'")
    flow = await world.workflow(
        [{"expression": "type == 'rare'", "targets": [{"queue": empty, "timeout": 20}]}],
        default=empty,
    )
    rare = await world.task(flow, type="rare")
    await world.sim.advance(12)
    wf = world.ws.workflows(flow)

    realtime = await wf.real_time_statistics().fetch_async()
    assert (realtime.longest_task_waiting_sid, realtime.longest_task_waiting_age) == (rare.sid, 12)
    assert realtime.tasks_by_status["pending"] == 1

    await world.sim.advance(8)
    cumulative = await wf.cumulative_statistics().fetch_async(minutes=5)
    assert cumulative.tasks_timed_out_in_workflow == 1
    assert (cumulative.tasks_entered, cumulative.tasks_canceled) == (1, 1)
    assert cumulative.wait_duration_until_canceled["max"] == 20
    combined = await wf.statistics().fetch_async()
    assert combined.realtime["tasks_by_status"]["canceled"] == 1
    assert combined.realtime["longest_task_waiting_sid"] is None
    assert combined.cumulative["tasks_timed_out_in_workflow"] == 1


async def test_workspace_statistics_cover_every_queue(world: World) -> None:
    desk = await _desk(world)
    await _history(world, desk)
    await world.sim.advance(31)
    stats = world.client.taskrouter.v1.workspaces(world.sid)

    realtime = await stats.real_time_statistics().fetch_async()
    cumulative = await stats.cumulative_statistics().fetch_async()
    combined = await stats.statistics().fetch_async(minutes=1)

    assert realtime.total_workers == 4
    assert realtime.total_tasks == 4
    assert (cumulative.tasks_created, cumulative.reservations_created) == (4, 4)
    assert (cumulative.tasks_canceled, cumulative.reservations_canceled) == (2, 1)
    assert combined.cumulative["tasks_created"] == 1  # only the sale, 31 s ago
    assert combined.realtime["total_workers"] == 4


async def test_reading_statistics_changes_nothing(world: World) -> None:
    desk = await _desk(world)
    await _history(world, desk)
    events = list(world.sim.state.events)
    revisions = {sid: t.revision for sid, t in world.workspace.tasks.items()}

    await desk.realtime(desk.support)
    await desk.cumulative(desk.support, split_by_wait_time="5")
    await desk.queue(desk.sales).statistics().fetch_async()
    await world.ws.workflows(desk.flow).statistics().fetch_async()
    await world.client.taskrouter.v1.workspaces(world.sid).statistics().fetch_async()

    assert list(world.sim.state.events) == events
    assert {sid: t.revision for sid, t in world.workspace.tasks.items()} == revisions


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"split_by_wait_time": "5,soon"}, "SplitByWaitTime"),
        ({"minutes": 0}, "Minutes"),
        ({"task_channel": "pigeon"}, "TaskChannel"),
    ],
)
async def test_bad_statistics_parameters_are_twilio_400s(
    world: World, params: dict[str, Any], message: str
) -> None:
    desk = await _desk(world)
    with pytest.raises(TwilioRestException) as raised:
        await desk.cumulative(desk.support, **params)
    assert (raised.value.status, raised.value.code) == (400, 20001)
    assert message in str(raised.value)
