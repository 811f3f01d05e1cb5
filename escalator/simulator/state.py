"""In-memory TaskRouter resources and the store that holds them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from escalator.expressions import Expression
from escalator.simulator.clock import Clock, RealClock
from escalator.simulator.events import EventLog
from escalator.simulator.faults import FaultInjector
from escalator.simulator.limits import RateLimits

if TYPE_CHECKING:
    from escalator.simulator.agents import WorkerAgents
    from escalator.simulator.callbacks import CallbackDispatcher
    from escalator.simulator.engine import Engine
    from escalator.simulator.voice import VoiceCalls

__all__ = [
    "ACTIVE_RESERVATION_STATUSES",
    "Activity",
    "Reservation",
    "RoutingFilter",
    "RoutingTarget",
    "SimulatorState",
    "Task",
    "TaskChannel",
    "TaskQueue",
    "Worker",
    "Workflow",
    "WorkflowRouting",
    "Workspace",
    "new_sid",
]


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: the 2-letter prefix and 32 lowercase hex characters."""
    return prefix + uuid.uuid4().hex


@dataclass
class Activity:
    """A worker state; `available` says whether workers in it get tasks."""

    sid: str
    workspace_sid: str
    friendly_name: str
    available: bool
    date_created: datetime
    date_updated: datetime


@dataclass
class TaskChannel:
    """A channel such as voice or chat."""

    sid: str
    workspace_sid: str
    friendly_name: str
    unique_name: str
    channel_optimized_routing: bool
    date_created: datetime
    date_updated: datetime


@dataclass
class TaskQueue:
    """A queue whose `target_workers` expression selects the workers it serves."""

    sid: str
    workspace_sid: str
    friendly_name: str
    target_workers: str
    target_expression: Expression
    max_reserved_workers: int
    task_order: str
    reservation_activity_sid: str | None
    assignment_activity_sid: str | None
    date_created: datetime
    date_updated: datetime


@dataclass
class Worker:
    """A human agent with JSON attributes and a current activity."""

    sid: str
    workspace_sid: str
    friendly_name: str
    activity_sid: str
    attributes: str
    date_created: datetime
    date_updated: datetime
    date_status_changed: datetime
    revision: int = 1
    # Longest idle first: a counter bumped on each activity change or finished task.
    idle_mark: int = 0


# A worker's capacity is taken by reservations in these states.
ACTIVE_RESERVATION_STATUSES = frozenset({"pending", "accepted", "wrapping"})


@dataclass
class Reservation:
    """A task offered to one worker (WR...), with the instruction that settled it."""

    sid: str
    workspace_sid: str
    task_sid: str
    worker_sid: str
    task_queue_sid: str
    workflow_sid: str
    status: str
    date_created: datetime
    date_updated: datetime
    instruction: str | None = None
    instruction_params: dict[str, str] = field(default_factory=dict)
    revision: int = 1


@dataclass(frozen=True)
class RoutingTarget:
    """One target of a workflow filter."""

    queue: str
    expression: Expression | None = None
    priority: int | None = None
    timeout: int | None = None


@dataclass(frozen=True)
class RoutingFilter:
    """A workflow filter: tasks matching `expression` go to `targets`."""

    friendly_name: str
    expression: Expression
    targets: tuple[RoutingTarget, ...]


@dataclass(frozen=True)
class WorkflowRouting:
    """A workflow configuration, parsed and validated."""

    filters: tuple[RoutingFilter, ...]
    default_queue: str | None

    def route(self, attributes: dict[str, object]) -> RoutingTarget | None:
        """The first target of the first matching filter, else the default filter's queue."""
        for routing_filter in self.filters:
            if routing_filter.expression.matches(attributes) and routing_filter.targets:
                return routing_filter.targets[0]
        return RoutingTarget(self.default_queue) if self.default_queue else None


@dataclass
class Workflow:
    """Routing rules from task attributes to queues."""

    sid: str
    workspace_sid: str
    friendly_name: str
    configuration: str
    routing: WorkflowRouting
    assignment_callback_url: str | None
    fallback_assignment_callback_url: str | None
    task_reservation_timeout: int
    date_created: datetime
    date_updated: datetime


@dataclass
class Task:
    """A unit of work waiting for a worker."""

    sid: str
    workspace_sid: str
    attributes: str
    assignment_status: str
    priority: int
    timeout: int
    task_channel_sid: str
    workflow_sid: str | None
    task_queue_sid: str | None
    task_queue_entered_date: datetime | None
    date_created: datetime
    date_updated: datetime
    reason: str | None = None
    revision: int = 1
    # Routing progress: the priority asked for, the matched filter (None: default filter)
    # and target, workers who rejected the task, and how many reservations it has had.
    base_priority: int = 0
    filter_index: int | None = None
    target_index: int = 0
    step_expired: bool = False
    rejected_workers: set[str] = field(default_factory=set)
    reservation_count: int = 0


@dataclass
class Workspace:
    """A TaskRouter workspace and everything in it."""

    sid: str
    friendly_name: str
    event_callback_url: str | None
    events_filter: str | None
    multi_task_enabled: bool
    prioritize_queue_order: str
    default_activity_sid: str
    timeout_activity_sid: str
    date_created: datetime
    date_updated: datetime
    activities: dict[str, Activity] = field(default_factory=dict)
    task_channels: dict[str, TaskChannel] = field(default_factory=dict)
    task_queues: dict[str, TaskQueue] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    workflows: dict[str, Workflow] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)

    def channel(self, name_or_sid: str) -> TaskChannel | None:
        """The task channel with this SID or unique name."""
        if name_or_sid in self.task_channels:
            return self.task_channels[name_or_sid]
        return next((c for c in self.task_channels.values() if c.unique_name == name_or_sid), None)


# A new workspace's activities and channels, as TaskRouter creates them.
_DEFAULT_ACTIVITIES = (("Offline", False), ("Unavailable", False), ("Available", True))
_DEFAULT_CHANNELS = (
    ("default", "Default"),
    ("voice", "Voice"),
    ("chat", "Chat"),
    ("sms", "SMS"),
    ("video", "Video"),
    ("email", "Email"),
)


@dataclass
class SimulatorState:
    """Everything the simulator knows: credentials, workspaces, faults, events and the clock."""

    account_sid: str
    auth_token: str
    clock: Clock = field(default_factory=RealClock)
    faults: FaultInjector = field(default_factory=FaultInjector)
    limits: RateLimits = field(default_factory=RateLimits)
    workspaces: dict[str, Workspace] = field(default_factory=dict)
    # The OpenAPI description says task and worker attributes are shown only by fetch;
    # set this to hide them in list responses and check the client copes.
    hide_attributes_in_lists: bool = False
    # Seeds the REST and callback faults' random choices, so a failing run can be replayed.
    seed: int = 0
    # Real seconds an assignment callback may take (Twilio: 5 s) before the fallback URL.
    assignment_callback_timeout: float = 5.0
    events: EventLog = field(init=False)
    callbacks: CallbackDispatcher = field(init=False)
    engine: Engine = field(init=False)
    agents: WorkerAgents = field(init=False)
    calls: VoiceCalls = field(init=False)

    def __post_init__(self) -> None:
        # Imported here: the engine and the dispatcher both work on this state.
        from escalator.simulator.agents import WorkerAgents
        from escalator.simulator.callbacks import CallbackDispatcher
        from escalator.simulator.engine import Engine
        from escalator.simulator.voice import VoiceCalls

        self.faults.seed(self.seed)
        self.events = EventLog(self.clock)
        self.callbacks = CallbackDispatcher(
            auth_token=self.auth_token,
            seed=self.seed,
            assignment_timeout=self.assignment_callback_timeout,
        )
        self.engine = Engine(self)
        self.agents = WorkerAgents(self, seed=self.seed)
        self.calls = VoiceCalls(self)

    def now(self) -> datetime:
        """The simulator's current time, UTC, whole seconds."""
        return self.clock.now().astimezone(UTC).replace(microsecond=0)

    def add_workspace(
        self,
        *,
        friendly_name: str,
        event_callback_url: str | None = None,
        events_filter: str | None = None,
        multi_task_enabled: bool = True,
        prioritize_queue_order: str = "FIFO",
    ) -> Workspace:
        """Create a workspace with TaskRouter's default activities and task channels."""
        now = self.now()
        sid = new_sid("WS")
        activities = {
            a.sid: a
            for a in (
                Activity(new_sid("WA"), sid, name, available, now, now)
                for name, available in _DEFAULT_ACTIVITIES
            )
        }
        offline = next(iter(activities))
        workspace = Workspace(
            sid=sid,
            friendly_name=friendly_name,
            event_callback_url=event_callback_url,
            events_filter=events_filter,
            multi_task_enabled=multi_task_enabled,
            prioritize_queue_order=prioritize_queue_order,
            default_activity_sid=offline,
            timeout_activity_sid=offline,
            date_created=now,
            date_updated=now,
            activities=activities,
        )
        for unique_name, friendly in _DEFAULT_CHANNELS:
            channel = TaskChannel(new_sid("TC"), sid, friendly, unique_name, False, now, now)
            workspace.task_channels[channel.sid] = channel
        self.workspaces[sid] = workspace
        return workspace
