"""Which task goes to which worker: workflow targets, eligibility and TaskRouter's orderings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

from escalator.expressions import Expression, ExpressionError, parse
from escalator.simulator.state import (
    ACTIVE_RESERVATION_STATUSES,
    RoutingTarget,
    Task,
    Worker,
    Workflow,
    Workspace,
)

__all__ = [
    "TargetOptions",
    "eligible_workers",
    "has_capacity",
    "offer_order",
    "queue_members",
    "select_filter",
    "should_skip",
    "target_options",
    "targets_of",
]


@dataclass(frozen=True)
class TargetOptions:
    """Target options the configuration parser drops: order_by, skip_if, known worker."""

    order_by: tuple[tuple[str, bool], ...] = ()
    skip_if: Expression | None = None
    known_worker_sid: str | None = None
    known_worker_friendly_name: str | None = None


def attributes_of(text: str) -> dict[str, Any]:
    """A resource's attributes; anything but a JSON object reads as empty."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def select_filter(workflow: Workflow, attributes: Mapping[str, object]) -> int | None:
    """The index of the first filter matching `attributes`; None means the default filter."""
    # Workflow overview: filters are evaluated top to bottom and the first match wins.
    for index, routing_filter in enumerate(workflow.routing.filters):
        if routing_filter.expression.matches(attributes) and routing_filter.targets:
            return index
    return None


def targets_of(workflow: Workflow, filter_index: int | None) -> tuple[RoutingTarget, ...]:
    """The targets of the filter at `filter_index`, or the default filter's single queue."""
    filters = workflow.routing.filters
    if filter_index is not None and filter_index < len(filters):
        return filters[filter_index].targets
    default = workflow.routing.default_queue
    return (RoutingTarget(default),) if default else ()


def _order_by(text: object) -> tuple[tuple[str, bool], ...]:
    if not isinstance(text, str):
        return ()
    keys = []
    for part in text.split(","):
        words = part.split()
        if words and words[0].startswith("worker."):
            keys.append((words[0].removeprefix("worker."), len(words) > 1 and words[1] == "DESC"))
    return tuple(keys)


def _known(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


@lru_cache(maxsize=256)
def _options(configuration: str) -> dict[tuple[int, int], TargetOptions]:
    options: dict[tuple[int, int], TargetOptions] = {}
    filters = json.loads(configuration).get("task_routing", {}).get("filters", [])
    for f_index, raw_filter in enumerate(filters):
        for t_index, raw in enumerate(raw_filter.get("targets", [])):
            skip_if = None
            if isinstance(raw.get("skip_if"), str):
                try:
                    skip_if = parse(raw["skip_if"])
                except ExpressionError:
                    skip_if = None
            options[f_index, t_index] = TargetOptions(
                order_by=_order_by(raw.get("order_by")),
                skip_if=skip_if,
                known_worker_sid=_known(raw.get("known_worker_sid")),
                known_worker_friendly_name=_known(raw.get("known_worker_friendly_name")),
            )
    return options


def target_options(workflow: Workflow, filter_index: int | None, index: int) -> TargetOptions:
    """`order_by`, `skip_if` and known-worker options of one target, read from the configuration."""
    if filter_index is None:
        return TargetOptions()
    return _options(workflow.configuration).get((filter_index, index), TargetOptions())


def has_capacity(workspace: Workspace, worker: Worker, channel_sid: str) -> bool:
    """Whether `worker` can take one more task on this channel."""
    active = [
        r
        for r in workspace.reservations.values()
        if r.worker_sid == worker.sid and r.status in ACTIVE_RESERVATION_STATUSES
    ]
    if not workspace.multi_task_enabled:
        # Without multi-tasking a worker handles one task at a time, whatever the channel.
        return not active
    # Multi-tasking: each channel has its own capacity, 1 by default (Worker Channel resource).
    on_channel = [
        r
        for r in active
        if (task := workspace.tasks.get(r.task_sid)) and task.task_channel_sid == channel_sid
    ]
    return not on_channel


def queue_members(workspace: Workspace, queue_sid: str) -> list[Worker]:
    """The workers the queue's `TargetWorkers` expression selects, whatever their activity."""
    queue = workspace.task_queues.get(queue_sid)
    if queue is None:
        return []
    return [
        w
        for w in workspace.workers.values()
        if queue.target_expression.matches(attributes_of(w.attributes))
    ]


def should_skip(workspace: Workspace, queue_sid: str, options: TargetOptions) -> bool:
    """Whether the target's `skip_if` holds, over the queue's workers by activity."""
    if options.skip_if is None:
        return False
    # Worker presence page: workers.available, workers.unavailable and workers.WA... count
    # the queue's workers by activity.
    counts: dict[str, int] = {"available": 0, "unavailable": 0}
    for worker in queue_members(workspace, queue_sid):
        activity = workspace.activities.get(worker.activity_sid)
        counts["available" if activity and activity.available else "unavailable"] += 1
        counts[worker.activity_sid] = counts.get(worker.activity_sid, 0) + 1
    return options.skip_if.matches({"workers": counts})


def _known_worker(options: TargetOptions, task_attributes: Mapping[str, Any]) -> tuple[str, str]:
    for kind, value in (
        ("sid", options.known_worker_sid),
        ("friendly_name", options.known_worker_friendly_name),
    ):
        if value is None:
            continue
        if value.startswith("task."):
            found: object = task_attributes
            for part in value.removeprefix("task.").split("."):
                found = found.get(part) if isinstance(found, Mapping) else None
            return kind, str(found) if found is not None else ""
        return kind, value
    return "", ""


def _sort_value(attributes: Mapping[str, Any], path: str) -> tuple[int, Any]:
    found: object = attributes
    for part in path.split("."):
        found = found.get(part) if isinstance(found, Mapping) else None
    if isinstance(found, bool | int | float):
        return 0, float(found)
    if isinstance(found, str):
        return 1, found
    return 2, 0


def _pair_value(path: str, pair: tuple[Worker, dict[str, Any]]) -> tuple[int, Any]:
    return _sort_value(pair[1], path)


def eligible_workers(
    workspace: Workspace, task: Task, target: RoutingTarget, options: TargetOptions
) -> list[Worker]:
    """Workers who may get a reservation for `task` now, best first."""
    queue = workspace.task_queues.get(target.queue)
    if queue is None:
        return []
    task_attributes = attributes_of(task.attributes)
    offered = {
        r.worker_sid
        for r in workspace.reservations.values()
        if r.task_sid == task.sid and r.status == "pending"
    }
    known_kind, known_value = _known_worker(options, task_attributes)
    chosen: list[tuple[Worker, dict[str, Any]]] = []
    for worker in workspace.workers.values():
        activity = workspace.activities.get(worker.activity_sid)
        if activity is None or not activity.available:
            continue
        # A worker who rejected a task is not offered it again.
        if worker.sid in task.rejected_workers or worker.sid in offered:
            continue
        if known_kind == "sid" and worker.sid != known_value:
            continue
        if known_kind == "friendly_name" and worker.friendly_name != known_value:
            continue
        worker_attributes = attributes_of(worker.attributes)
        if not queue.target_expression.matches(worker_attributes):
            continue
        if target.expression is not None and not target.expression.matches(
            task_attributes, worker=worker_attributes
        ):
            continue
        if not has_capacity(workspace, worker, task.task_channel_sid):
            continue
        chosen.append((worker, worker_attributes))
    # Longest idle first, unless the target's order_by says otherwise.
    chosen.sort(key=lambda pair: pair[0].idle_mark)
    for path, descending in reversed(options.order_by):
        present = [p for p in chosen if _sort_value(p[1], path)[0] < 2]
        missing = [p for p in chosen if _sort_value(p[1], path)[0] == 2]
        present.sort(key=partial(_pair_value, path), reverse=descending)
        chosen = present + missing
    return [worker for worker, _ in chosen]


def offer_order(workspace: Workspace) -> list[Task]:
    """Tasks waiting for workers: higher priority first, then older (newer in LIFO queues)."""
    waiting = []
    for age_rank, task in enumerate(workspace.tasks.values()):
        if task.assignment_status not in ("pending", "reserved") or task.task_queue_sid is None:
            continue
        queue = workspace.task_queues.get(task.task_queue_sid)
        lifo = queue is not None and queue.task_order == "LIFO"
        waiting.append((-task.priority, -age_rank if lifo else age_rank, task))
    waiting.sort(key=lambda item: (item[0], item[1]))
    return [task for _, _, task in waiting]
