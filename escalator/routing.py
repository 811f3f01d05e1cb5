"""The routing file: reason codes to TaskRouter routing, and the workspace that routing expects."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from escalator.errors import RoutingFileError
from escalator.expressions import ExpressionError, parse

__all__ = [
    "Activity",
    "AssignmentSpec",
    "CascadeSpec",
    "ChannelAssignment",
    "DemoWorker",
    "Department",
    "Reason",
    "Route",
    "RoutingFile",
    "RoutingTable",
    "Target",
    "TaskQueue",
    "Workflow",
    "WorkflowFilter",
    "WorkspaceSpec",
    "bundled_routing_path",
    "load_routing",
]

MAX_PRIORITY = 2_147_483_647
MAX_TASK_TTL = 1_209_600
MAX_RESERVATION_TIMEOUT = 86_400
DEFAULT_REASON = "default"

_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REASON_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

Priority = Annotated[int, Field(ge=0, le=MAX_PRIORITY, strict=True)]
TaskTimeout = Annotated[int, Field(ge=1, le=MAX_TASK_TTL, strict=True)]
Name = Annotated[str, Field(min_length=1, max_length=64)]
DepartmentName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Skill = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,32}$")]
# Static attributes of a reason share the task's 4,096-character budget with the summary.
MAX_REASON_ATTRIBUTES_CHARS = 512


def _check_keys(attributes: dict[str, Any], where: str = "") -> dict[str, Any]:
    for key, value in attributes.items():
        if not _ATTRIBUTE_KEY.match(key):
            raise ValueError(
                f"attribute name {where}{key!r} is not a TaskRouter identifier "
                "([A-Za-z_][A-Za-z0-9_]*); a hyphen is read as subtraction and never matches"
            )
        if isinstance(value, dict):
            _check_keys(value, f"{where}{key}.")
    return attributes


def _check_expression(text: str, *, require_prefixes: bool = False) -> str:
    try:
        parse(text, require_prefixes=require_prefixes)
    except ExpressionError as exc:
        raise ValueError(f"invalid TaskRouter expression {text!r}: {exc}") from None
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Department(_Strict):
    """A department: the task queue its escalations are meant for."""

    queue: Name
    description: str = ""


class Reason(_Strict):
    """How one reason code is routed."""

    department: DepartmentName
    priority: Priority = 0
    timeout: TaskTimeout = 3_600
    skills: tuple[Skill, ...] = Field(default=(), max_length=10)
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_keys(value)
        if len(json.dumps(value, ensure_ascii=True)) > MAX_REASON_ATTRIBUTES_CHARS:
            raise ValueError(f"must encode to at most {MAX_REASON_ATTRIBUTES_CHARS} characters")
        return value


class Activity(_Strict):
    """A TaskRouter activity the workspace must have."""

    name: Name
    available: bool


class TaskQueue(_Strict):
    """A TaskRouter task queue and the workers it targets."""

    name: Name
    target_workers: str = "1==1"

    @field_validator("target_workers")
    @classmethod
    def _target_workers(cls, value: str) -> str:
        return _check_expression(value)


class Target(_Strict):
    """One step of a workflow filter: a queue, optionally with its own timeout and priority."""

    queue: Name
    timeout: Annotated[int, Field(ge=1, le=MAX_TASK_TTL)] | None = None
    priority: Priority | None = None
    expression: str | None = None

    @field_validator("expression")
    @classmethod
    def _target_expression(cls, value: str | None) -> str | None:
        return None if value is None else _check_expression(value, require_prefixes=True)


class WorkflowFilter(_Strict):
    """A workflow filter: tasks matching ``expression`` go through ``targets`` in order."""

    name: Name
    expression: str
    targets: tuple[Target, ...] = Field(min_length=1)

    @field_validator("expression")
    @classmethod
    def _filter_expression(cls, value: str) -> str:
        return _check_expression(value)


class Workflow(_Strict):
    """The TaskRouter workflow escalations are created in."""

    friendly_name: Name = "Escalations"
    task_reservation_timeout: Annotated[int, Field(ge=1, le=MAX_RESERVATION_TIMEOUT)] = 120
    filters: tuple[WorkflowFilter, ...] = ()
    default_queue: Name


class DemoWorker(_Strict):
    """A worker the demo and the simulator's seed create."""

    name: Name
    activity: Name = "Available"
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_keys(value)


class WorkspaceSpec(_Strict):
    """The TaskRouter workspace the routing expects (checked by ``check``, not ``serve``)."""

    friendly_name: Name = "Escalator"
    timeout_activity: Name = "Offline"
    activities: tuple[Activity, ...]
    task_queues: tuple[TaskQueue, ...] = Field(min_length=1)
    workflow: Workflow
    demo_workers: tuple[DemoWorker, ...] = ()

    @model_validator(mode="after")
    def _references_resolve(self) -> WorkspaceSpec:
        activities = {activity.name for activity in self.activities}
        queues = {queue.name for queue in self.task_queues}
        if self.timeout_activity not in activities:
            raise ValueError(f"timeout_activity: {self.timeout_activity!r} is not an activity")
        references = [
            (f"workflow.filters.{i}.targets.{j}.queue", target.queue)
            for i, item in enumerate(self.workflow.filters)
            for j, target in enumerate(item.targets)
        ]
        references.append(("workflow.default_queue", self.workflow.default_queue))
        for where, queue in references:
            if queue not in queues:
                raise ValueError(f"{where}: unknown task queue {queue!r}")
        for index, worker in enumerate(self.demo_workers):
            if worker.activity not in activities:
                raise ValueError(
                    f"demo_workers.{index}.activity: unknown activity {worker.activity!r}"
                )
        return self


class ChannelAssignment(_Strict):
    """The assignment instruction for one channel's reservations."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    instruction: Literal["accept", "dequeue"] = "accept"
    # Dequeue bridges the call to the worker from this caller id (a Twilio number of yours).
    caller_id: str | None = Field(default=None, alias="from", pattern=r"^\+[1-9][0-9]{6,14}$")
    post_work_activity_sid: str | None = Field(default=None, pattern=r"^WA[0-9a-fA-F]{32}$")

    @model_validator(mode="after")
    def _dequeue_needs_a_caller_id(self) -> ChannelAssignment:
        if self.instruction == "dequeue" and self.caller_id is None:
            raise ValueError("a 'dequeue' instruction needs 'from', the caller id of the call")
        return self


_ACCEPT = ChannelAssignment()
# Twilio's magic test number: a placeholder until a routing file names a number of its own.
_DEFAULT_CALLER_ID = "+15005550006"


class AssignmentSpec(_Strict):
    """What ``POST /taskrouter/assignment`` answers, per channel."""

    chat: ChannelAssignment = _ACCEPT
    sms: ChannelAssignment = _ACCEPT
    whatsapp: ChannelAssignment = _ACCEPT
    email: ChannelAssignment = _ACCEPT
    voice: ChannelAssignment = ChannelAssignment(
        instruction="dequeue", caller_id=_DEFAULT_CALLER_ID
    )

    def for_channel(self, channel: str | None) -> ChannelAssignment:
        """The instruction for ``channel``; an unknown or missing channel is accepted."""
        value = getattr(self, channel, None) if channel in _CHANNELS else None
        return value if isinstance(value, ChannelAssignment) else _ACCEPT


_CHANNELS = frozenset({"chat", "sms", "whatsapp", "email", "voice"})


class CascadeSpec(_Strict):
    """The reservation timeout cascade fix: put a timed-out worker back into ``activity``."""

    reset: bool = True
    activity: Name = "Available"


class RoutingFile(_Strict):
    """The whole routing file, validated."""

    version: int = Field(default=1, ge=1, le=1)
    departments: dict[DepartmentName, Department] = Field(min_length=1)
    reasons: dict[str, Reason]
    workspace: WorkspaceSpec
    assignment: AssignmentSpec = AssignmentSpec()
    cascade: CascadeSpec = CascadeSpec()

    @model_validator(mode="after")
    def _cascade_activity_exists(self) -> RoutingFile:
        # Checked only when the file names the cascade: older files keep their meaning.
        if "cascade" not in self.model_fields_set or not self.cascade.reset:
            return self
        activities = {activity.name: activity for activity in self.workspace.activities}
        activity = activities.get(self.cascade.activity)
        if activity is None:
            raise ValueError(f"cascade.activity: {self.cascade.activity!r} is not an activity")
        if not activity.available:
            raise ValueError(
                f"cascade.activity: {self.cascade.activity!r} is not available: a worker "
                "put back there would receive no reservations"
            )
        return self

    @field_validator("reasons")
    @classmethod
    def _reason_codes(cls, reasons: dict[str, Reason]) -> dict[str, Reason]:
        for code in reasons:
            if not _REASON_CODE.match(code):
                raise ValueError(f"reason code {code!r} must match [a-z][a-z0-9_]*, 64 at most")
        if DEFAULT_REASON not in reasons:
            raise ValueError("a 'default' reason is required: unknown codes are routed by it")
        return reasons

    @model_validator(mode="after")
    def _departments_resolve(self) -> RoutingFile:
        queues = {queue.name for queue in self.workspace.task_queues}
        for code, reason in self.reasons.items():
            if reason.department not in self.departments:
                raise ValueError(
                    f"reasons.{code}.department: unknown department {reason.department!r}"
                )
        for name, department in self.departments.items():
            if department.queue not in queues:
                raise ValueError(
                    f"departments.{name}.queue: unknown task queue {department.queue!r}"
                )
        return self


@dataclass(frozen=True, slots=True)
class Route:
    """Where one escalation goes: the routing of its reason code, or of ``default``."""

    reason_code: str
    department: str
    priority: int
    timeout: int
    skills: tuple[str, ...]
    attributes: dict[str, Any]
    known_reason: bool


class RoutingTable:
    """Looks up the route of a reason code."""

    def __init__(self, routing: RoutingFile) -> None:
        self.file = routing

    def route(self, reason_code: str) -> Route:
        """The route for ``reason_code``; unknown codes take the ``default`` route, flagged."""
        known = reason_code in self.file.reasons
        reason = self.file.reasons[reason_code if known else DEFAULT_REASON]
        return Route(
            reason_code=reason_code,
            department=reason.department,
            priority=reason.priority,
            timeout=reason.timeout,
            skills=reason.skills,
            attributes=dict(reason.attributes),
            known_reason=known,
        )


def bundled_routing_path() -> Path:
    """The example routing file shipped with the package."""
    return Path(str(resources.files("escalator") / "resources" / "routing.yaml"))


# Cross-reference checks name the key they are about at the start of their message.
_KEYED_MESSAGE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.]*): (?P<problem>.+)$", re.DOTALL)


def _describe(loc: tuple[int | str, ...], message: str) -> str:
    where = ".".join(str(part) for part in loc)
    keyed = _KEYED_MESSAGE.match(message)
    if keyed:
        where = f"{where}.{keyed['key']}" if where else keyed["key"]
        message = keyed["problem"]
    return f"{where or '(top level)'}: {message}"


def load_routing(path: Path | None = None) -> RoutingTable:
    """Read and validate a routing file; errors name the file, the key and the problem."""
    path = path or bundled_routing_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RoutingFileError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RoutingFileError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise RoutingFileError(f"{path}: expected a mapping at the top level")
    try:
        return RoutingTable(RoutingFile.model_validate(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        raise RoutingFileError(f"{path}: {_describe(first['loc'], message)}") from None
