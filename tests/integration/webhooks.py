"""Helpers of the webhook tests: point the simulator's callbacks at the service, sign by hand."""

from __future__ import annotations

from typing import Any

from twilio.request_validator import RequestValidator

from tests.conftest import AUTH_TOKEN
from tests.integration.conftest import Service

EMAIL, PHONE = "ada@example.com", "+15558675310"
SUMMARY = "Customer Ada disputes a charge of 42 euros on the March invoice."


def body(conversation_id: str, **fields: Any) -> dict[str, Any]:
    """An escalation request carrying customer data that must never reach logs or events."""
    return {
        "conversation_id": conversation_id,
        "reason_code": "billing_dispute",
        "summary": SUMMARY,
        "channel": "chat",
        "customer": {"name": "Ada", "phone": PHONE, "email": EMAIL},
        **fields,
    }


async def connect(service: Service, *, events: bool = True, assignment: bool = False) -> None:
    """Send the simulator's event (and assignment) callbacks to the service, as TaskRouter would."""
    ws = service.sim.client.taskrouter.v1.workspaces(service.sim.workspace.workspace_sid)
    if events:
        await ws.update_async(event_callback_url=f"{service.public_url}/taskrouter/events")
    if assignment:
        await ws.workflows(service.sim.workspace.workflow_sid).update_async(
            assignment_callback_url=f"{service.public_url}/taskrouter/assignment"
        )


async def escalate(service: Service, conversation_id: str, **fields: Any) -> str:
    """Create an escalation and its task; its id."""
    response = await service.post(body(conversation_id, **fields))
    assert response.status == 201, await response.text()
    escalation_id = str((await response.json())["id"])
    await service.dispatcher.run_once()
    return escalation_id


async def settle(service: Service) -> None:
    """Every callback sent and every side effect owed carried out."""
    await service.sim.running.state.callbacks.drain()
    while await service.dispatcher.run_once():
        await service.sim.running.state.callbacks.drain()


async def post_signed(
    service: Service, path: str, params: dict[str, str], *, signature: str | None = None
) -> Any:
    """POST a form to the service signed as TaskRouter signs (or with ``signature``)."""
    url = service.public_url + path
    signed = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    headers = {"X-Twilio-Signature": signed if signature is None else signature}
    return await service.client.post(path, data=params, headers=headers)


def metric(service: Service, name: str, **labels: str) -> float:
    """A sample of the service's metrics (0 when never counted)."""
    value = service.metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)
