"""Parsing and validating a Workflow's `Configuration` JSON, as TaskRouter does at create/update."""

from __future__ import annotations

import json
from collections.abc import Container
from typing import Any

from escalator.simulator.errors import TwilioApiError, bad_parameter
from escalator.simulator.params import parse_expression
from escalator.simulator.state import RoutingFilter, RoutingTarget, WorkflowRouting

__all__ = ["parse_configuration"]

_MAX_PRIORITY = 2_147_483_647


def _fail(message: str) -> TwilioApiError:
    return bad_parameter(f"Invalid Configuration: {message}")


def _queue(value: object, where: str, queues: Container[str]) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(f"{where} needs a 'queue'")
    if value not in queues:
        raise _fail(f"{where}: TaskQueue {value} not found in this workspace")
    return value


def _optional_int(target: dict[str, Any], name: str, where: str, maximum: int) -> int | None:
    value = target.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise _fail(f"{where}: '{name}' must be an integer between 0 and {maximum}")
    return value


def _target(raw: object, where: str, queues: Container[str]) -> RoutingTarget:
    if not isinstance(raw, dict):
        raise _fail(f"{where} must be an object")
    expression = raw.get("expression")
    if expression is not None and not isinstance(expression, str):
        raise _fail(f"{where}: 'expression' must be a string")
    return RoutingTarget(
        queue=_queue(raw.get("queue"), where, queues),
        # Target expressions compare task and worker: every key needs `task.` or `worker.`.
        expression=parse_expression(f"{where} expression", expression, require_prefixes=True)
        if expression
        else None,
        priority=_optional_int(raw, "priority", where, _MAX_PRIORITY),
        timeout=_optional_int(raw, "timeout", where, 1_209_600),
    )


def _filter(raw: object, index: int, queues: Container[str]) -> RoutingFilter:
    where = f"task_routing.filters[{index}]"
    if not isinstance(raw, dict):
        raise _fail(f"{where} must be an object")
    expression = raw.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise _fail(f"{where} needs an 'expression'")
    targets = raw.get("targets")
    if not isinstance(targets, list) or not targets:
        raise _fail(f"{where} needs a non-empty 'targets' array")
    name = raw.get("filter_friendly_name") or raw.get("friendly_name") or f"filter {index}"
    return RoutingFilter(
        friendly_name=str(name),
        expression=parse_expression(f"{where} expression", expression),
        targets=tuple(_target(t, f"{where}.targets[{i}]", queues) for i, t in enumerate(targets)),
    )


def parse_configuration(text: str, queues: Container[str]) -> WorkflowRouting:
    """Validate the JSON and every expression; a 400 (code 20001) says what and where."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise _fail(f"not valid JSON ({error})") from None
    routing = document.get("task_routing") if isinstance(document, dict) else None
    if not isinstance(routing, dict):
        raise _fail("needs a 'task_routing' object")
    filters = routing.get("filters", [])
    if not isinstance(filters, list):
        raise _fail("'task_routing.filters' must be an array")
    default = routing.get("default_filter")
    default_queue = None
    if default is not None:
        if not isinstance(default, dict):
            raise _fail("'task_routing.default_filter' must be an object")
        default_queue = _queue(default.get("queue"), "task_routing.default_filter", queues)
    return WorkflowRouting(
        filters=tuple(_filter(f, i, queues) for i, f in enumerate(filters)),
        default_queue=default_queue,
    )
