"""A local TaskRouter v1 simulator that the real twilio SDK talks to over HTTP."""

from __future__ import annotations

from escalator.simulator.app import CONTROL_PREFIX, create_simulator_app
from escalator.simulator.callbacks import CallbackFaults, Delivery
from escalator.simulator.clock import Clock, RealClock, VirtualClock
from escalator.simulator.engine import Engine, TransitionError
from escalator.simulator.events import EventRecord
from escalator.simulator.faults import ANY_OPERATION, Fault, FaultInjector
from escalator.simulator.server import RunningSimulator, start_simulator
from escalator.simulator.state import SimulatorState

__all__ = [
    "ANY_OPERATION",
    "CONTROL_PREFIX",
    "CallbackFaults",
    "Clock",
    "Delivery",
    "Engine",
    "EventRecord",
    "Fault",
    "FaultInjector",
    "RealClock",
    "RunningSimulator",
    "SimulatorState",
    "TransitionError",
    "VirtualClock",
    "create_simulator_app",
    "start_simulator",
]
