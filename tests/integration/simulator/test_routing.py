"""Routing: workflow filters and targets, timeouts, and which worker gets which task first."""

from __future__ import annotations

from tests.integration.simulator.conftest import World


def _target(queue: str, **options: object) -> dict[str, object]:
    return {"queue": queue, **options}


async def test_first_matching_filter_wins_and_default_filter_catches_the_rest(
    world: World,
) -> None:
    sales = await world.queue("Sales")
    vip = await world.queue("VIP")
    other = await world.queue("Other")
    flow = await world.workflow(
        [
            {
                "filter_friendly_name": "vip",
                "expression": "tier == 'gold'",
                "targets": [_target(vip)],
            },
            {"expression": "type == 'sales'", "targets": [_target(sales)]},
        ],
        default=other,
    )
    both = await world.task(flow, tier="gold", type="sales")
    sale = await world.task(flow, type="sales")
    neither = await world.task(flow, type="support")
    assert (both.task_queue_sid, sale.task_queue_sid, neither.task_queue_sid) == (vip, sales, other)
    matched = world.sim.state.events.of_type("workflow.target-matched", TaskSid=both.sid)
    assert matched[0].get("WorkflowFilterName") == "vip"
    assert world.types(TaskSid=both.sid)[:4] == [
        "task.created",
        "workflow.entered",
        "workflow.target-matched",
        "task-queue.entered",
    ]


async def test_target_priority_overrides_the_task_priority(world: World) -> None:
    queue = await world.queue("Q")
    flow = await world.workflow(
        [{"expression": "urgent == true", "targets": [_target(queue, priority=50)]}], default=queue
    )
    urgent = await world.task(flow, urgent=True, _priority=3)
    normal = await world.task(flow, urgent=False, _priority=3)
    assert (urgent.priority, normal.priority) == (50, 3)


async def test_target_timeout_overflows_to_the_next_target(world: World) -> None:
    experts = await world.queue("Experts", "skills HAS 'expert'")
    everyone = await world.queue("Everyone")
    flow = await world.workflow(
        [{"expression": "1==1", "targets": [_target(experts, timeout=30), _target(everyone)]}]
    )
    generalist = await world.worker("gina", skills=["general"])
    task = await world.task(flow)
    await world.sim.advance(29)
    assert (await world.fetch(task.sid)).task_queue_sid == experts
    assert (await world.fetch(task.sid)).assignment_status == "pending"
    await world.sim.advance(1)
    moved = await world.fetch(task.sid)
    assert (moved.task_queue_sid, moved.assignment_status) == (everyone, "reserved")
    assert (await world.pending(task.sid)).worker_sid == generalist
    assert world.types(TaskSid=task.sid)[-4:] == [
        "task-queue.timeout",
        "workflow.target-matched",
        "task-queue.moved",
        "reservation.created",
    ]


async def test_target_timeouts_count_from_the_task_age(world: World) -> None:
    # Timeout evaluation page: the deadline of target n is the sum of timeouts 0..n.
    first = await world.queue("First", "nobody == 1")
    second = await world.queue("Second", "nobody == 1")
    third = await world.queue("Third", "nobody == 1")
    flow = await world.workflow(
        [
            {
                "expression": "1==1",
                "targets": [
                    _target(first, timeout=10),
                    _target(second, timeout=10),
                    _target(third),
                ],
            }
        ]
    )
    task = await world.task(flow)
    await world.sim.advance(10)
    assert (await world.fetch(task.sid)).task_queue_sid == second
    await world.sim.advance(9)
    assert (await world.fetch(task.sid)).task_queue_sid == second
    await world.sim.advance(1)
    assert (await world.fetch(task.sid)).task_queue_sid == third


async def test_last_target_timeout_cancels_the_task_with_workflow_timeout(world: World) -> None:
    queue = await world.queue("Nobody", "skills HAS 'none'")
    flow = await world.workflow([{"expression": "1==1", "targets": [_target(queue, timeout=10)]}])
    task = await world.task(flow)
    await world.sim.advance(10)
    canceled = await world.fetch(task.sid)
    assert (canceled.assignment_status, canceled.reason) == ("canceled", "Workflow Timeout")
    assert world.types(TaskSid=task.sid)[-3:] == [
        "task-queue.timeout",
        "workflow.timeout",
        "task.canceled",
    ]


async def test_task_ttl_cancels_with_task_ttl_exceeded(world: World) -> None:
    queue = await world.queue("Nobody", "skills HAS 'none'")
    flow = await world.workflow([], default=queue)
    task = await world.task(flow, _timeout=60)
    await world.sim.advance(59)
    assert (await world.fetch(task.sid)).assignment_status == "pending"
    await world.sim.advance(1)
    canceled = await world.fetch(task.sid)
    assert (canceled.assignment_status, canceled.reason) == ("canceled", "Task TTL Exceeded")
    [event] = world.sim.state.events.of_type("task.canceled", TaskSid=task.sid)
    assert event.get("TaskCanceledReason") == "Task TTL Exceeded"
    assert event.description == "Task TTL Exceeded"


async def test_longest_idle_worker_is_offered_first(world: World) -> None:
    queue = await world.queue("Q")
    flow = await world.workflow([], default=queue)
    ann = await world.worker("ann")
    bob = await world.worker("bob")
    # Ann changed activity last, so Bob has been idle longer.
    await world.set_activity(ann, "Unavailable")
    await world.set_activity(ann, "Available")
    task = await world.task(flow)
    assert (await world.pending(task.sid)).worker_sid == bob


async def test_higher_priority_then_older_tasks_are_offered_first(world: World) -> None:
    queue = await world.queue("Q")
    flow = await world.workflow([], default=queue)
    worker = await world.worker("solo", available=False)
    low = await world.task(flow, _priority=1)
    high = await world.task(flow, _priority=5)
    high_later = await world.task(flow, _priority=5)
    await world.set_activity(worker, "Available")
    order = []
    for _ in range(3):
        [reserved] = [
            t for t in await world.ws.tasks.list_async() if t.assignment_status == "reserved"
        ]
        order.append(reserved.sid)
        reservation = await world.pending(reserved.sid)
        await (
            world.ws.tasks(reserved.sid)
            .reservations(reservation.sid)
            .update_async(reservation_status="accepted")
        )
        await world.ws.tasks(reserved.sid).update_async(
            assignment_status="completed", reason="done"
        )
    assert order == [high.sid, high_later.sid, low.sid]


async def test_capacity_is_one_task_per_channel(world: World) -> None:
    queue = await world.queue("Q")
    flow = await world.workflow([], default=queue)
    await world.worker("solo")
    first = await world.task(flow)
    second = await world.task(flow)
    chat = await world.ws.tasks.create_async(
        attributes="{}", workflow_sid=flow, task_channel="chat"
    )
    statuses = [(await world.fetch(t.sid)).assignment_status for t in (first, second, chat)]
    # Multi-tasking workspace: one task per channel; the chat task takes the chat slot.
    assert statuses == ["reserved", "pending", "reserved"]


async def test_without_multitasking_a_worker_takes_one_task(vclient: object, vsim: object) -> None:
    world = await World.create(vclient, vsim, multi_task_enabled=False)  # type: ignore[arg-type]
    queue = await world.queue("Q")
    flow = await world.workflow([], default=queue)
    await world.worker("solo")
    await world.task(flow)
    chat = await world.ws.tasks.create_async(
        attributes="{}", workflow_sid=flow, task_channel="chat"
    )
    assert (await world.fetch(chat.sid)).assignment_status == "pending"


async def test_unavailable_worker_is_not_offered_until_available(world: World) -> None:
    queue = await world.queue("Q")
    flow = await world.workflow([], default=queue)
    worker = await world.worker("sleepy", available=False)
    task = await world.task(flow)
    await world.set_activity(worker, "Unavailable")
    assert (await world.fetch(task.sid)).assignment_status == "pending"
    await world.set_activity(worker, "Available")
    assert (await world.pending(task.sid)).worker_sid == worker


async def test_queue_and_target_expressions_select_workers(world: World) -> None:
    queue = await world.queue("Support", "skills HAS 'support'")
    flow = await world.workflow(
        [
            {
                "expression": "1==1",
                "targets": [_target(queue, expression="task.lang IN worker.langs")],
            }
        ]
    )
    await world.worker("sales-fr", skills=["sales"], langs=["fr"])
    await world.worker("support-en", skills=["support"], langs=["en"])
    french = await world.worker("support-fr", skills=["support"], langs=["fr"])
    task = await world.task(flow, lang="fr")
    assert (await world.pending(task.sid)).worker_sid == french


async def test_order_by_skip_if_and_known_worker(world: World) -> None:
    queue = await world.queue("Q")
    empty = await world.queue("Empty", "nobody == 1")
    flow = await world.workflow(
        [
            {
                "expression": "kind == 'ordered'",
                "targets": [_target(queue, order_by="worker.level DESC")],
            },
            {
                "expression": "kind == 'skip'",
                "targets": [_target(empty, skip_if="workers.available == 0"), _target(queue)],
            },
            {
                "expression": "kind == 'known'",
                "targets": [_target(queue, known_worker_sid="task.agent")],
            },
        ]
    )
    junior = await world.worker("junior", level=1)
    senior = await world.worker("senior", level=9)
    mid = await world.worker("mid", level=5)
    ordered = await world.task(flow, kind="ordered")
    assert (await world.pending(ordered.sid)).worker_sid == senior
    skipped = await world.task(flow, kind="skip")
    assert (await world.fetch(skipped.sid)).task_queue_sid == queue
    assert (await world.pending(skipped.sid)).worker_sid == junior
    known = await world.task(flow, kind="known", agent=mid)
    assert (await world.pending(known.sid)).worker_sid == mid


async def test_task_is_canceled_after_1000_reservations(world: World) -> None:
    queue = await world.queue("Q")
    flow = await world.workflow([], default=queue, reservation_timeout=1)
    worker = await world.worker("flaky")
    task = await world.task(flow)
    available = world.activities["Available"]
    for _ in range(1000):
        await world.sim.advance(1)  # the reservation times out; the worker goes Offline
        world.sim.engine.change_activity(world.sid, worker, available)
    canceled = await world.fetch(task.sid)
    assert canceled.assignment_status == "canceled"
    assert len(world.sim.state.events.of_type("reservation.created", TaskSid=task.sid)) == 1000
