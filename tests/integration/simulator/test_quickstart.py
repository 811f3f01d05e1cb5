"""Twilio's skills-based routing quickstart, replayed with the SDK on the virtual clock."""

from __future__ import annotations

import json

from twilio.rest import Client

from escalator.simulator import RunningSimulator


async def test_skills_based_routing_quickstart(vclient: Client, vsim: RunningSimulator) -> None:
    v1 = vclient.taskrouter.v1
    workspace = await v1.workspaces.create_async(friendly_name="Twilio Center")
    ws = v1.workspaces(workspace.sid)
    activities = {a.friendly_name: a.sid for a in await ws.activities.list_async()}
    available = activities["Available"]

    async def worker(name: str, attributes: dict[str, object]) -> str:
        created = await ws.workers.create_async(
            friendly_name=name, attributes=json.dumps(attributes), activity_sid=available
        )
        return str(created.sid)

    billing_agent = await worker("Bill", {"skills": ["billing"], "languages": ["en"]})
    sales_agent = await worker("Sam", {"skills": ["sales"], "languages": ["en", "es"]})
    # `skills` is a string here: `skills HAS 'billing'` never matches it.
    stringly = await worker("Stringly", {"skills": "billing", "languages": ["en"]})

    billing = await ws.task_queues.create_async(
        friendly_name="Billing", target_workers="skills HAS 'billing'"
    )
    await ws.task_queues.create_async(friendly_name="Sales", target_workers="skills HAS 'sales'")
    everyone = await ws.task_queues.create_async(friendly_name="Everyone", target_workers="1==1")
    configuration = {
        "task_routing": {
            "filters": [
                {
                    "filter_friendly_name": "Billing",
                    "expression": "type == 'billing'",
                    "targets": [
                        {
                            "queue": billing.sid,
                            "expression": "task.language IN worker.languages",
                            "timeout": 30,
                        },
                        {"queue": everyone.sid},
                    ],
                }
            ],
            "default_filter": {"queue": everyone.sid},
        }
    }
    workflow = await ws.workflows.create_async(
        friendly_name="Skills",
        configuration=json.dumps(configuration),
        task_reservation_timeout=20,
    )

    async def task(attributes: dict[str, object]) -> str:
        created = await ws.tasks.create_async(
            attributes=json.dumps(attributes), workflow_sid=workflow.sid
        )
        return str(created.sid)

    def types(task_sid: str) -> list[str]:
        return vsim.state.events.types(TaskSid=task_sid)

    # 1. A billing task reaches the billing worker, who accepts it.
    first = await task({"type": "billing", "language": "en"})
    [offer] = await ws.tasks(first).reservations.list_async()
    assert offer.worker_sid == billing_agent
    await (
        ws.workers(billing_agent)
        .reservations(offer.sid)
        .update_async(reservation_status="accepted")
    )

    # 2. With Bill busy, the next billing task waits in Billing (Stringly's string `skills`
    #    never matches HAS), then overflows to Everyone after the 30 s target timeout.
    second = await task({"type": "billing", "language": "en"})
    await vsim.advance(29)
    fetched = await ws.tasks(second).fetch_async()
    assert (fetched.task_queue_sid, fetched.assignment_status) == (billing.sid, "pending")
    await vsim.advance(1)
    fetched = await ws.tasks(second).fetch_async()
    assert (fetched.task_queue_sid, fetched.assignment_status) == (everyone.sid, "reserved")

    # 3. Sam (idle longest) rejects; Stringly is offered the task and lets it time out.
    [sams] = await ws.tasks(second).reservations.list_async(reservation_status="pending")
    assert sams.worker_sid == sales_agent
    await ws.tasks(second).reservations(sams.sid).update_async(reservation_status="rejected")
    [stringlys] = await ws.tasks(second).reservations.list_async(reservation_status="pending")
    assert stringlys.worker_sid == stringly
    await vsim.advance(20)

    assert types(second) == [
        "task.created",
        "workflow.entered",
        "workflow.target-matched",
        "task-queue.entered",
        "task-queue.timeout",
        "workflow.target-matched",
        "task-queue.moved",
        "reservation.created",
        "reservation.rejected",
        "reservation.created",
        "reservation.timeout",
    ]
    # The timed-out worker lands in the workspace's timeout activity (Offline by default).
    timed_out = await ws.workers(stringly).fetch_async()
    assert (timed_out.activity_sid, timed_out.activity_name) == (
        workspace.timeout_activity_sid,
        "Offline",
    )
    moves = vsim.state.events.of_type("worker.activity.update", WorkerSid=stringly)
    assert moves[-1].get("WorkerActivityName") == "Offline"
    assert (await ws.tasks(second).fetch_async()).assignment_status == "pending"
    # Nobody is left: Bill is busy, Sam rejected it and Stringly is offline.
    assert await ws.tasks(second).reservations.list_async(reservation_status="pending") == []
