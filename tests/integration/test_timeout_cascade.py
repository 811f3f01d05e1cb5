"""The reservation timeout cascade fix: a timed-out worker is put back to work, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from escalator.routing import bundled_routing_path
from escalator.simulator import CallbackFaults
from tests.integration.conftest import Service, ServiceFactory
from tests.integration.webhooks import connect, escalate, metric, settle

pytestmark = pytest.mark.virtual_clock
# The bundled routing file's workflow lets a reservation wait 30 s.
RESERVATION_TIMEOUT = 30


async def _time_out_first_reservation(service: Service) -> str:
    """Escalate, let the first offer time out unanswered; the worker who had it."""
    await connect(service)
    escalation_id = await escalate(service, "cascade")
    await settle(service)
    history = (await service.get(escalation_id))["history"]
    [offer] = [entry for entry in history if entry["event"] == "reservation.created"]
    await service.sim.running.advance(RESERVATION_TIMEOUT + 1)
    await service.sim.running.state.callbacks.drain()
    return str(offer["worker_sid"])


async def _activity(service: Service, worker_sid: str) -> str:
    ws = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    return str((await ws.workers(worker_sid).fetch_async()).activity_name)


def _moves_to_available(service: Service, worker_sid: str) -> int:
    return sum(
        record.get("WorkerActivityName") == "Available"
        for record in service.sim.running.state.events.of_type(
            "worker.activity.update", WorkerSid=worker_sid
        )
    )


async def test_a_timed_out_worker_is_available_again_once_even_if_the_event_comes_twice(
    service: Service,
) -> None:
    service.sim.running.state.callbacks.set_faults(CallbackFaults(duplicate=1.0), seed=3)
    worker = await _time_out_first_reservation(service)
    # TaskRouter moved the worker to the workspace's timeout activity.
    assert await _activity(service, worker) == "Offline"
    await settle(service)
    assert await _activity(service, worker) == "Available"
    assert _moves_to_available(service, worker) == 1
    assert metric(service, "escalator_worker_resets_total", result="done") == 1
    assert (
        metric(
            service,
            "escalator_taskrouter_events_total",
            type="reservation.timeout",
            result="duplicate",
        )
        >= 1
    )
    assert await service.store.outbox_backlog() == 0


async def test_a_worker_who_chose_another_activity_meanwhile_is_left_alone(
    service: Service,
) -> None:
    worker = await _time_out_first_reservation(service)
    ws = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    await ws.workers(worker).update_async(activity_sid=service.sim.workspace.activities["Break"])
    await settle(service)
    assert await _activity(service, worker) == "Break"
    assert metric(service, "escalator_worker_resets_total", result="skipped") == 1
    assert metric(service, "escalator_worker_resets_total", result="done") == 0


async def test_the_cascade_fix_can_be_switched_off(
    service_factory: ServiceFactory, tmp_path: Path
) -> None:
    routing = tmp_path / "routing.yaml"
    text = bundled_routing_path().read_text(encoding="utf-8")
    routing.write_text(text.replace("  reset: true", "  reset: false"), encoding="utf-8")
    service = await service_factory(routing_file=routing)
    worker = await _time_out_first_reservation(service)
    await settle(service)
    assert await _activity(service, worker) == "Offline"
    assert metric(service, "escalator_worker_resets_total", result="done") == 0
