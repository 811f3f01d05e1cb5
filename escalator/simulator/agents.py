"""Simulated workers that act: each answers its reservations by a policy, deterministic by seed."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from escalator.simulator.lifecycle import TransitionError

if TYPE_CHECKING:
    from escalator.simulator.events import EventRecord
    from escalator.simulator.state import SimulatorState, Workspace

__all__ = ["WorkerAgents", "WorkerPolicy", "policy_from_json", "policy_from_text"]


@dataclass(frozen=True)
class WorkerPolicy:
    """How a simulated worker answers a reservation.

    It accepts with probability ``accept``, rejects with ``reject``, and otherwise lets the
    reservation time out; it answers ``answer_after`` seconds after the offer, completes an
    accepted task ``complete_after`` seconds later (never when None), and after each task it
    finished, rejected or let time out it goes offline with probability ``offline``.
    """

    accept: float = 1.0
    reject: float = 0.0
    answer_after: float = 2.0
    complete_after: float | None = 30.0
    offline: float = 0.0

    def __post_init__(self) -> None:
        for name in ("accept", "reject", "offline"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1")
        if self.accept + self.reject > 1.0:
            raise ValueError("accept + reject must not exceed 1")
        if self.answer_after < 0 or (self.complete_after is not None and self.complete_after < 0):
            raise ValueError("delays must not be negative")

    def to_json(self) -> dict[str, Any]:
        """The policy as the control API shows it."""
        return asdict(self)


def policy_from_json(body: object) -> WorkerPolicy:
    """A policy from a control-API body; ValueError names what is wrong."""
    if not isinstance(body, Mapping):
        raise ValueError("expected a JSON object")
    known = set(WorkerPolicy.__dataclass_fields__)
    unknown = set(body) - known
    if unknown:
        raise ValueError(f"unknown policy fields: {', '.join(sorted(map(str, unknown)))}")
    values: dict[str, Any] = {}
    for name, value in body.items():
        if value is None and name == "complete_after":
            values[name] = None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values[str(name)] = float(value)
        else:
            raise ValueError(f"{name} must be a number")
    return WorkerPolicy(**values)


def policy_from_text(text: str) -> WorkerPolicy:
    """A policy from ``accept=0.8,reject=0.1,answer_after=2,complete_after=none``."""
    body: dict[str, object] = {}
    for part in filter(None, (item.strip() for item in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"expected name=value, got {part!r}")
        name = name.strip()
        try:
            body[name] = None if value.strip().lower() == "none" else float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number") from None
    return policy_from_json(body)


class WorkerAgents:
    """Answers reservations on behalf of workers that have a policy (or the default one)."""

    def __init__(self, state: SimulatorState, *, seed: int = 0) -> None:
        self._state = state
        self.default: WorkerPolicy | None = None
        self._policies: dict[str, WorkerPolicy] = {}
        # Not for security: seeded so that a run with probabilities replays exactly.
        self._rng = random.Random(seed)  # noqa: S311
        state.events.subscribe(self._on_event)

    def set_policy(self, worker_sid: str, policy: WorkerPolicy | None) -> None:
        """Give one worker its own policy; None makes it follow the default again."""
        if policy is None:
            self._policies.pop(worker_sid, None)
        else:
            self._policies[worker_sid] = policy

    def policy_of(self, worker_sid: str) -> WorkerPolicy | None:
        """The policy a worker follows, or None when it does nothing by itself."""
        return self._policies.get(worker_sid, self.default)

    def reseed(self, seed: int) -> None:
        """Restart the random choices."""
        self._rng = random.Random(seed)  # noqa: S311

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        def run() -> None:
            # The reservation may have been settled meanwhile (by REST, a callback, a timeout).
            try:
                action()
            except TransitionError:
                return

        self._state.clock.call_later(delay, run)

    def _on_event(self, record: EventRecord) -> None:
        worker_sid = record.get("WorkerSid")
        reservation_sid = record.get("ReservationSid")
        if worker_sid is None or reservation_sid is None:
            return
        policy = self.policy_of(worker_sid)
        if policy is None:
            return
        workspace_sid = record.workspace_sid
        if record.event_type == "reservation.created":
            draw = self._rng.random()
            if draw < policy.accept:
                self._later(
                    policy.answer_after,
                    lambda: self._state.engine.accept(workspace_sid, reservation_sid),
                )
            elif draw < policy.accept + policy.reject:
                self._later(
                    policy.answer_after,
                    lambda: self._reject(workspace_sid, reservation_sid, policy),
                )
        elif record.event_type == "reservation.accepted" and policy.complete_after is not None:
            task_sid = record.get("TaskSid") or ""
            self._later(
                policy.complete_after,
                lambda: self._complete(workspace_sid, task_sid, worker_sid, policy),
            )
        elif record.event_type == "reservation.timeout":
            self._maybe_go_offline(workspace_sid, worker_sid, policy)

    def _workspace(self, workspace_sid: str) -> Workspace:
        workspace = self._state.workspaces.get(workspace_sid)
        if workspace is None:
            raise TransitionError(f"Workspace {workspace_sid} not found")
        return workspace

    def _reject(self, workspace_sid: str, reservation_sid: str, policy: WorkerPolicy) -> None:
        worker_sid = self._state.engine.reservation(workspace_sid, reservation_sid).worker_sid
        self._state.engine.reject(workspace_sid, reservation_sid)
        self._maybe_go_offline(workspace_sid, worker_sid, policy)

    def _complete(
        self, workspace_sid: str, task_sid: str, worker_sid: str, policy: WorkerPolicy
    ) -> None:
        workspace = self._workspace(workspace_sid)
        task = workspace.tasks.get(task_sid)
        if task is None or task.assignment_status not in ("assigned", "wrapping"):
            return
        self._state.engine.complete_task(workspace, task, "Completed by a simulated worker")
        self._maybe_go_offline(workspace_sid, worker_sid, policy)

    def _maybe_go_offline(self, workspace_sid: str, worker_sid: str, policy: WorkerPolicy) -> None:
        if self._rng.random() >= policy.offline:
            return
        workspace = self._workspace(workspace_sid)
        offline = next(
            (a.sid for a in workspace.activities.values() if a.friendly_name == "Offline"),
            workspace.timeout_activity_sid,
        )
        self._state.engine.change_activity(workspace_sid, worker_sid, offline)
