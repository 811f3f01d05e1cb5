"""A local TaskRouter v1 simulator that the real twilio SDK talks to over HTTP."""

from __future__ import annotations

from escalator.simulator.app import create_simulator_app
from escalator.simulator.faults import ANY_OPERATION, Fault, FaultInjector
from escalator.simulator.server import RunningSimulator, start_simulator
from escalator.simulator.state import SimulatorState

__all__ = [
    "ANY_OPERATION",
    "Fault",
    "FaultInjector",
    "RunningSimulator",
    "SimulatorState",
    "create_simulator_app",
    "start_simulator",
]
