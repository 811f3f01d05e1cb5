"""Simulated workers that act by policy: whole lifecycles without a human, replayable by seed."""

from __future__ import annotations

import pytest

from escalator.simulator import RunningSimulator
from escalator.simulator.agents import WorkerPolicy, policy_from_json, policy_from_text
from tests.integration.simulator.conftest import World


async def _flow(world: World) -> str:
    queue = await world.queue("Q")
    return await world.workflow([], default=queue, reservation_timeout=30)


async def test_a_worker_that_accepts_takes_the_task_and_completes_it(world: World) -> None:
    flow = await _flow(world)
    ann = await world.worker("ann")
    world.sim.state.agents.set_policy(ann, WorkerPolicy(answer_after=3, complete_after=20))
    task = await world.task(flow)
    assert (await world.fetch(task.sid)).assignment_status == "reserved"
    await world.sim.advance(2)
    assert (await world.fetch(task.sid)).assignment_status == "reserved"
    await world.sim.advance(1)
    assert (await world.fetch(task.sid)).assignment_status == "assigned"
    await world.sim.advance(20)
    assert (await world.fetch(task.sid)).assignment_status == "completed"
    assert world.types(TaskSid=task.sid)[-2:] == [
        "task.completed",
        "reservation.completed",
    ]


async def test_a_worker_that_rejects_passes_the_task_on(world: World) -> None:
    flow = await _flow(world)
    ann = await world.worker("ann")
    bob = await world.worker("bob")
    world.sim.state.agents.set_policy(ann, WorkerPolicy(accept=0, reject=1, answer_after=1))
    world.sim.state.agents.set_policy(bob, WorkerPolicy(answer_after=1, complete_after=None))
    task = await world.task(flow)
    await world.sim.advance(1)
    await world.sim.advance(1)
    reservations = await world.reservations(task.sid)
    assert sorted((r.worker_sid, r.reservation_status) for r in reservations) == sorted(
        [(ann, "rejected"), (bob, "accepted")]
    )


async def test_a_worker_that_never_answers_times_out_into_the_timeout_activity(
    world: World,
) -> None:
    flow = await _flow(world)
    ann = await world.worker("ann")
    world.sim.state.agents.set_policy(ann, WorkerPolicy(accept=0, reject=0))
    task = await world.task(flow)
    await world.sim.advance(30)
    assert [r.reservation_status for r in await world.reservations(task.sid)] == ["timeout"]
    worker = await world.ws.workers(ann).fetch_async()
    assert worker.activity_name == "Offline"


async def test_without_a_policy_workers_do_nothing(world: World) -> None:
    flow = await _flow(world)
    await world.worker("ann")
    task = await world.task(flow)
    await world.sim.advance(10)
    assert (await world.fetch(task.sid)).assignment_status == "reserved"


async def test_a_default_policy_applies_to_every_worker(world: World) -> None:
    flow = await _flow(world)
    await world.worker("ann")
    world.sim.state.agents.default = WorkerPolicy(answer_after=0, complete_after=None)
    task = await world.task(flow)
    await world.sim.advance(0)
    assert (await world.fetch(task.sid)).assignment_status == "assigned"


async def _outcomes(sim: RunningSimulator, world: World, seed: int) -> list[str]:
    sim.state.agents.reseed(seed)
    sim.state.agents.default = WorkerPolicy(accept=0.5, reject=0.3, answer_after=1)
    flow = await _flow(world)
    for name in ("a", "b", "c", "d"):
        await world.worker(name)
    tasks = [await world.task(flow) for _ in range(8)]
    await world.sim.advance(1)
    return [(await world.fetch(t.sid)).assignment_status for t in tasks]


async def test_probabilistic_policies_replay_exactly_under_a_seed(
    vsim: RunningSimulator, world: World
) -> None:
    first = await _outcomes(vsim, world, seed=3)
    second_world = await World.create(world.client, vsim)
    second = await _outcomes(vsim, second_world, seed=3)
    assert first == second
    assert set(first) != {"reserved"}


def test_policies_are_parsed_and_checked() -> None:
    assert policy_from_text("accept=0.8, reject=0.1, complete_after=none") == WorkerPolicy(
        accept=0.8, reject=0.1, complete_after=None
    )
    assert policy_from_json({"answer_after": 5}).answer_after == 5
    for bad in ("accept=1.5", "accept=0.8,reject=0.3", "speed=3", "accept", "accept=x"):
        with pytest.raises(ValueError):  # noqa: PT011 - the message is checked by the CLI test
            policy_from_text(bad)
