"""The routing engine: TaskRouter's behaviour over the simulator's state, callable in process."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from escalator.simulator.lifecycle import Lifecycle, TransitionError
from escalator.simulator.state import Reservation, Worker, Workspace

if TYPE_CHECKING:
    from escalator.simulator.state import SimulatorState

__all__ = ["CALL_INSTRUCTIONS", "INSTRUCTIONS", "Engine", "TransitionError"]

# Assignment instructions (assignment callback and reservation update `Instruction`).
INSTRUCTIONS = ("accept", "reject", "dequeue", "call", "redirect", "conference")
# Instructions that connect a call: recorded on the reservation, which counts as accepted.
CALL_INSTRUCTIONS = ("dequeue", "call", "redirect", "conference")


class Engine(Lifecycle):
    """TaskRouter's routing and lifecycle; handlers, callbacks and tests call these methods."""

    def __init__(self, state: SimulatorState) -> None:
        super().__init__(state)
        state.callbacks.instruction_handler = self.apply_instruction

    def _workspace(self, workspace_sid: str) -> Workspace:
        workspace = self.state.workspaces.get(workspace_sid)
        if workspace is None:
            raise TransitionError(f"Workspace {workspace_sid} not found")
        return workspace

    def reservation(self, workspace_sid: str, reservation_sid: str) -> Reservation:
        """A reservation by SID."""
        found = self._workspace(workspace_sid).reservations.get(reservation_sid)
        if found is None:
            raise TransitionError(f"Reservation {reservation_sid} not found")
        return found

    def accept(self, workspace_sid: str, reservation_sid: str) -> None:
        """Accept a pending reservation in process, as `ReservationStatus=accepted` does."""
        self.accept_reservation(
            self._workspace(workspace_sid), self.reservation(workspace_sid, reservation_sid)
        )

    def reject(
        self, workspace_sid: str, reservation_sid: str, *, activity_sid: str | None = None
    ) -> None:
        """Reject a pending reservation in process, optionally moving the worker."""
        self.reject_reservation(
            self._workspace(workspace_sid),
            self.reservation(workspace_sid, reservation_sid),
            activity_sid=activity_sid,
        )

    def change_activity(self, workspace_sid: str, worker_sid: str, activity_sid: str) -> None:
        """Move a worker to another activity in process, as a Worker update does."""
        workspace = self._workspace(workspace_sid)
        worker: Worker | None = workspace.workers.get(worker_sid)
        if worker is None:
            raise TransitionError(f"Worker {worker_sid} not found")
        self.set_worker_activity(workspace, worker, activity_sid)

    def instruct(
        self,
        workspace: Workspace,
        reservation: Reservation,
        instruction: str,
        params: Mapping[str, str],
        *,
        activity_sid: str | None = None,
    ) -> None:
        """Carry out an assignment instruction on a pending reservation."""
        if instruction == "accept":
            self.accept_reservation(workspace, reservation, params=params)
        elif instruction == "reject":
            self.reject_reservation(workspace, reservation, activity_sid=activity_sid)
        elif instruction in CALL_INSTRUCTIONS:
            # The simulator places no call: the instruction and its parameters are recorded
            # and the reservation counts as accepted, as when the worker answers.
            self.accept_reservation(workspace, reservation, instruction=instruction, params=params)
        else:
            raise TransitionError(f"Unknown instruction {instruction!r}")

    def apply_instruction(
        self, workspace_sid: str, reservation_sid: str, answer: Mapping[str, Any]
    ) -> None:
        """Act on an assignment callback's JSON answer, if its reservation is still pending."""
        workspace = self.state.workspaces.get(workspace_sid)
        if workspace is None:
            return
        reservation = workspace.reservations.get(reservation_sid)
        instruction = answer.get("instruction")
        if reservation is None or reservation.status != "pending":
            return
        if not isinstance(instruction, str) or instruction not in INSTRUCTIONS:
            return
        params = {k: str(v) for k, v in answer.items() if k != "instruction" and v is not None}
        activity = answer.get("activity_sid")
        if activity is not None and activity not in workspace.activities:
            activity = None
        self.instruct(
            workspace,
            reservation,
            instruction,
            params,
            activity_sid=activity if isinstance(activity, str) else None,
        )
