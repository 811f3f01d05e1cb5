"""``escalator demo``: the service on SQLite with the simulator and acting workers in-process."""

from __future__ import annotations

import json
import secrets

from escalator.cli.running import provision_simulator, serve_app, start_simulator_or_fail
from escalator.logs import get_logger
from escalator.routing import load_routing
from escalator.settings import Settings, load_settings
from escalator.simulator import RunningSimulator
from escalator.simulator.agents import WorkerPolicy
from escalator.simulator.events import EventRecord
from escalator.taskrouter.provision import ProvisionedWorkspace

__all__ = ["run_demo"]

_log = get_logger(__name__)
_NARRATED = frozenset(
    {"reservation.created", "reservation.accepted", "task.completed", "task.canceled"}
)
# Demo workers answer like attentive humans: accept after 2 s, finish after a minute.
_DEMO_POLICY = WorkerPolicy(accept=1.0, answer_after=2.0, complete_after=60.0)


def _narrate(record: EventRecord) -> None:
    """Say in the demo's log what the simulated workers do with escalations."""
    if record.event_type not in _NARRATED:
        return
    try:
        attributes = json.loads(record.get("TaskAttributes") or "{}")
    except ValueError:
        attributes = {}
    _log.info(
        f"simulator.{record.event_type}",
        worker=record.get("WorkerName"),
        task_sid=record.get("TaskSid"),
        escalation_id=attributes.get("escalation_id") if isinstance(attributes, dict) else None,
    )


def _banner(
    settings: Settings,
    api_key: str,
    simulator: RunningSimulator,
    workspace: ProvisionedWorkspace,
    auth_token: str,
) -> str:
    base = settings.effective_public_url
    conversation = f"demo-{secrets.token_hex(4)}"
    body = (
        f'{{"conversation_id":"{conversation}","reason_code":"billing_dispute",'
        '"summary":"Customer disputes a $42 charge on the March invoice and asked for a person.",'
        '"channel":"chat","customer":{"name":"Ada","language":"en"}}'
    )
    auth = f'-H "Authorization: Bearer {api_key}"'
    workers = ", ".join(workspace.workers) or "none"
    secret = settings.callback_secret.get_secret_value() if settings.callback_secret else "none"
    return f"""
escalator demo is running
  API        {base}   (SQLite: {settings.database_url.removeprefix("sqlite:///")})
  TaskRouter simulator {simulator.url}  workspace {workspace.workspace_sid}
  API key    {api_key}
  Auth token {auth_token}   (the simulator's: it signs the callbacks to /taskrouter/*)
  Status callback secret {secret}   (verifies X-Escalator-Signature)

Escalate a conversation, then read it back (paste both lines; the GET shows it
go from queued to reserved to assigned as a demo worker takes it):

  ID=$(curl -sS -X POST {base}/escalations {auth} -H "Content-Type: application/json" \\
    -d '{body}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  curl -sS {base}/escalations/$ID {auth}

The demo workers ({workers}) accept an offered escalation after 2 s and finish
it a minute later; the log below says who took which escalation.

Press Ctrl-C to stop.
"""


async def run_demo(settings: Settings, simulator_port: int) -> None:
    """Run the demo until SIGINT or SIGTERM."""
    routing = load_routing(settings.routing_file)
    account_sid = f"AC{secrets.token_hex(16)}"
    auth_token = secrets.token_hex(16)
    simulator = await start_simulator_or_fail(
        settings.host, simulator_port, account_sid, auth_token
    )
    simulator.state.agents.default = _DEMO_POLICY
    simulator.state.events.subscribe(_narrate)
    try:
        workspace = await provision_simulator(
            simulator,
            account_sid,
            auth_token,
            routing,
            callbacks_to=settings.effective_public_url,
        )
        api_key = (
            settings.api_keys[0].get_secret_value()
            if settings.api_keys
            else secrets.token_urlsafe(24)
        )
        demo_settings = load_settings(
            None,
            **{
                **settings.model_dump(exclude_unset=True),
                "api_keys": api_key if not settings.api_keys else settings.api_keys,
                "twilio_account_sid": account_sid,
                "twilio_auth_token": auth_token,
                "workspace_sid": workspace.workspace_sid,
                "workflow_sid": workspace.workflow_sid,
                "taskrouter_url": simulator.url,
                # The demo's status callbacks may go to a receiver on this machine.
                "callback_secret": settings.callback_secret or secrets.token_hex(16),
                "callback_allow_http": True,
                "callback_allow_private": True,
            },
        )

        async def announce() -> None:
            print(_banner(demo_settings, api_key, simulator, workspace, auth_token), flush=True)

        await serve_app(demo_settings, routing, on_ready=announce)
    finally:
        await simulator.close()
