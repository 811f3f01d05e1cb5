"""Simulated phone calls queued the way ``<Enqueue workflowSid><Task>`` TwiML queues them."""

from __future__ import annotations

import contextlib
import json
import math
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from escalator.simulator.lifecycle import TransitionError
from escalator.simulator.state import Task, Workflow, Workspace, new_sid

if TYPE_CHECKING:
    from escalator.simulator.events import EventRecord
    from escalator.simulator.state import SimulatorState

__all__ = ["EnqueueError", "SimulatedCall", "VoiceCalls"]

MAX_TWIML = 65_536
DEFAULT_TTL = 86_400
MAX_TTL = 1_209_600
MAX_PRIORITY = 2_147_483_647


class EnqueueError(ValueError):
    """The TwiML cannot enqueue a call into TaskRouter."""


@dataclass
class SimulatedCall:
    """A caller waiting in a TaskRouter queue, and what became of the call."""

    sid: str
    workspace_sid: str
    task_sid: str
    action_url: str | None
    from_number: str
    to_number: str
    enqueued_at: datetime
    result: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The call as the control API shows it."""
        return {
            "call_sid": self.sid,
            "workspace_sid": self.workspace_sid,
            "task_sid": self.task_sid,
            "action_url": self.action_url,
            "from": self.from_number,
            "to": self.to_number,
            "queue_result": self.result,
        }


@dataclass(frozen=True)
class _Enqueue:
    workflow_sid: str
    action_url: str | None
    attributes: dict[str, Any]
    priority: int | None
    timeout: int


def _integer(element: ET.Element, name: str, low: int, high: int) -> int | None:
    text = element.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise EnqueueError(f"<Task {name}> must be an integer, got {text!r}") from None
    if not low <= value <= high:
        raise EnqueueError(f"<Task {name}> must be between {low} and {high}")
    return value


def _parse(twiml: str) -> _Enqueue:
    if len(twiml) > MAX_TWIML:
        raise EnqueueError(f"TwiML over {MAX_TWIML} characters")
    try:
        # Developer input through the control API, capped in size; expat (2.4.1 and later)
        # refuses entity-expansion bombs. Not an untrusted network input path.
        root = ET.fromstring(twiml)  # noqa: S314
    except ET.ParseError as exc:
        raise EnqueueError(f"TwiML is not well-formed XML: {exc}") from None
    enqueue = root if root.tag == "Enqueue" else root.find("Enqueue")
    if enqueue is None:
        raise EnqueueError("no <Enqueue> verb in the TwiML")
    workflow_sid = enqueue.get("workflowSid")
    if not workflow_sid:
        raise EnqueueError("<Enqueue> needs a workflowSid to create a TaskRouter task")
    task = enqueue.find("Task")
    attributes: dict[str, Any] = {}
    priority, timeout = None, None
    if task is not None:
        try:
            parsed = json.loads(task.text or "{}")
        except ValueError:
            raise EnqueueError("<Task> must hold a JSON object of task attributes") from None
        if not isinstance(parsed, dict):
            raise EnqueueError("<Task> must hold a JSON object of task attributes")
        attributes = parsed
        priority = _integer(task, "priority", 0, MAX_PRIORITY)
        timeout = _integer(task, "timeout", 1, MAX_TTL)
    return _Enqueue(
        workflow_sid, enqueue.get("action"), attributes, priority, timeout or DEFAULT_TTL
    )


class VoiceCalls:
    """Calls queued through ``<Enqueue>``: their tasks, and the queue result reported back."""

    def __init__(self, state: SimulatorState) -> None:
        self._state = state
        self.calls: dict[str, SimulatedCall] = {}
        self._by_task: dict[str, str] = {}
        state.events.subscribe(self._on_event)

    def _workflow(self, workflow_sid: str) -> tuple[Workspace, Workflow]:
        for workspace in self._state.workspaces.values():
            if workflow_sid in workspace.workflows:
                return workspace, workspace.workflows[workflow_sid]
        raise EnqueueError(f"Workflow {workflow_sid} not found")

    def enqueue(
        self,
        twiml: str,
        *,
        call_sid: str | None = None,
        from_number: str = "+15005550006",
        to_number: str = "+15005550001",
        hangup_after: float | None = None,
    ) -> SimulatedCall:
        """Queue a call as this TwiML would; the caller hangs up after `hangup_after` seconds."""
        enqueue = _parse(twiml)
        workspace, workflow = self._workflow(enqueue.workflow_sid)
        sid = call_sid or f"CA{uuid.uuid4().hex}"
        # A task made by <Enqueue> carries the call's SID (error 40140: a dequeue needs
        # `call_sid`); the other call fields are the ones Twilio's voice webhooks carry.
        attributes = {
            **enqueue.attributes,
            "call_sid": sid,
            "account_sid": self._state.account_sid,
            "from": from_number,
            "to": to_number,
            "caller": from_number,
            "called": to_number,
            "direction": "inbound",
        }
        voice = workspace.channel("voice")
        now = self._state.now()
        task = Task(
            sid=new_sid("WT"),
            workspace_sid=workspace.sid,
            attributes=json.dumps(attributes),
            assignment_status="pending",
            priority=enqueue.priority or 0,
            timeout=enqueue.timeout,
            task_channel_sid=voice.sid if voice else next(iter(workspace.task_channels)),
            workflow_sid=workflow.sid,
            task_queue_sid=None,
            task_queue_entered_date=None,
            date_created=now,
            date_updated=now,
        )
        call = SimulatedCall(
            sid, workspace.sid, task.sid, enqueue.action_url, from_number, to_number, now
        )
        self.calls[sid] = call
        self._by_task[task.sid] = sid
        workspace.tasks[task.sid] = task
        self._state.engine.task_created(workspace, task)
        if hangup_after is not None and math.isfinite(hangup_after):
            self._state.clock.call_later(hangup_after, lambda: self._hang_up_later(sid))
        return call

    def _hang_up_later(self, call_sid: str) -> None:
        self.hang_up(call_sid)

    def hang_up(self, call_sid: str) -> SimulatedCall:
        """The caller gives up: the task is canceled and the queue result is `hangup`."""
        call = self.calls[call_sid]
        if call.result is not None:
            return call
        self._finish(call, "hangup")
        workspace = self._state.workspaces.get(call.workspace_sid)
        task = workspace.tasks.get(call.task_sid) if workspace else None
        # Twilio: if the caller hangs up before being assigned, the task is canceled.
        if workspace and task and task.assignment_status in ("pending", "reserved"):
            with contextlib.suppress(TransitionError):
                self._state.engine.cancel_task(workspace, task, "hangup")
        return call

    def _on_event(self, record: EventRecord) -> None:
        call_sid = self._by_task.get(record.get("TaskSid") or "")
        if call_sid is None:
            return
        call = self.calls[call_sid]
        if call.result is not None:
            return
        if record.event_type == "reservation.accepted":
            workspace = self._state.workspaces.get(record.workspace_sid)
            reservation = (
                workspace.reservations.get(record.get("ReservationSid") or "")
                if workspace
                else None
            )
            # Only a dequeue instruction connects the waiting caller to the worker.
            if reservation is not None and reservation.instruction == "dequeue":
                self._finish(call, "bridged")
        elif record.event_type == "task.canceled":
            # The task ended without a worker (TTL, workflow timeout, a REST cancel): the call
            # leaves the queue. The exact QueueResult Twilio reports here is not documented.
            self._finish(call, "leave")

    def _finish(self, call: SimulatedCall, result: str) -> None:
        call.result = result
        if not call.action_url:
            return
        waited = max(0, int((self._state.now() - call.enqueued_at).total_seconds()))
        params = {
            "AccountSid": self._state.account_sid,
            "CallSid": call.sid,
            "From": call.from_number,
            "To": call.to_number,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
            "CallStatus": "completed" if result == "hangup" else "in-progress",
            "QueueResult": result,
            "QueueTime": str(waited),
        }
        self._state.callbacks.send_request("enqueue-action", call.action_url, params)
