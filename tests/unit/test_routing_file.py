"""``load_routing``: the bundled file, the route lookup, and one-line errors for broken files."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from escalator.errors import RoutingFileError
from escalator.routing import DEFAULT_REASON, bundled_routing_path, load_routing

Raw = dict[str, Any]


@pytest.fixture(scope="module")
def bundled() -> Raw:
    """The bundled routing file as plain YAML data, to break one thing at a time."""
    raw = yaml.safe_load(bundled_routing_path().read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    return raw


def write_routing(directory: Path, raw: Raw) -> Path:
    path = directory / "routing.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def routing_error(path: Path) -> str:
    with pytest.raises(RoutingFileError) as caught:
        load_routing(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_bundled_file_has_at_least_five_reason_codes_and_a_default() -> None:
    reasons = load_routing(bundled_routing_path()).file.reasons

    assert DEFAULT_REASON in reasons
    assert len(set(reasons) - {DEFAULT_REASON}) >= 5


def test_no_path_loads_the_bundled_file() -> None:
    assert load_routing().file == load_routing(bundled_routing_path()).file


def test_bundled_file_dumped_unchanged_still_loads(tmp_path: Path, bundled: Raw) -> None:
    """The control for the broken-file cases: only the one change breaks them."""
    path = write_routing(tmp_path, bundled)

    assert load_routing(path).file == load_routing(bundled_routing_path()).file


def test_known_reason_code_takes_its_own_route() -> None:
    route = load_routing().route("billing_dispute")

    assert route.reason_code == "billing_dispute"
    assert route.known_reason is True
    assert route.department == "billing"
    assert route.priority == 50
    assert route.timeout == 3600
    assert route.skills == ("billing",)


def test_static_attributes_of_a_reason_come_with_its_route() -> None:
    table = load_routing()

    route = table.route("fraud_suspected")
    route.attributes["sensitive"] = False

    assert table.route("fraud_suspected").attributes == {"sensitive": True}


def test_unknown_reason_code_takes_the_default_route_flagged() -> None:
    table = load_routing()
    default = table.file.reasons[DEFAULT_REASON]

    route = table.route("wants_a_pony")

    assert route.known_reason is False
    assert route.reason_code == "wants_a_pony"
    assert (route.department, route.priority, route.timeout, route.skills) == (
        default.department,
        default.priority,
        default.timeout,
        default.skills,
    )


def test_default_itself_is_a_known_reason_code() -> None:
    assert load_routing().route(DEFAULT_REASON).known_reason is True


def _set(*keys: str | int, value: object) -> Callable[[Raw], None]:
    def change(raw: Raw) -> None:
        node: Any = raw
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


def _delete(*keys: str) -> Callable[[Raw], None]:
    def change(raw: Raw) -> None:
        node: Any = raw
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return change


BILLING = ("reasons", "billing_dispute")
FIRST_TARGET = ("workspace", "workflow", "filters", 0, "targets", 0, "queue")


@pytest.mark.parametrize(
    ("change", "key_path", "problem"),
    [
        pytest.param(
            _set(*BILLING, "attributes", value={"order-id": "x"}),
            "reasons.billing_dispute.attributes",
            "'order-id' is not a TaskRouter identifier",
            id="hyphenated-attribute",
        ),
        pytest.param(
            _set(*BILLING, "attributes", value={"order": {"line-item": 1}}),
            "reasons.billing_dispute.attributes",
            "'line-item' is not a TaskRouter identifier",
            id="hyphenated-nested-attribute",
        ),
        pytest.param(
            _set(*BILLING, "department", value="legal"),
            "reasons.billing_dispute.department",
            "unknown department 'legal'",
            id="unknown-department",
        ),
        pytest.param(
            _set(*BILLING, "priority", value=-1),
            "reasons.billing_dispute.priority",
            "greater than or equal to 0",
            id="priority-negative",
        ),
        pytest.param(
            _set(*BILLING, "priority", value=2_147_483_648),
            "reasons.billing_dispute.priority",
            "less than or equal to 2147483647",
            id="priority-over-int32",
        ),
        pytest.param(
            _set(*BILLING, "timeout", value=-60),
            "reasons.billing_dispute.timeout",
            "greater than or equal to 1",
            id="timeout-negative",
        ),
        pytest.param(
            _set(*BILLING, "timeout", value=0),
            "reasons.billing_dispute.timeout",
            "greater than or equal to 1",
            id="timeout-zero",
        ),
        pytest.param(
            _set(*BILLING, "timeout", value=1_209_601),
            "reasons.billing_dispute.timeout",
            "less than or equal to 1209600",
            id="timeout-over-14-days",
        ),
        pytest.param(
            _delete("reasons", DEFAULT_REASON),
            "reasons",
            "'default' reason is required",
            id="no-default-reason",
        ),
        pytest.param(
            _set("departments", "billing", "queue", value="Nowhere"),
            "departments.billing.queue",
            "unknown task queue 'Nowhere'",
            id="department-queue-unknown",
        ),
        pytest.param(
            _set(*FIRST_TARGET, value="Nowhere"),
            "workspace.workflow.filters.0.targets.0.queue",
            "unknown task queue 'Nowhere'",
            id="workflow-target-queue-unknown",
        ),
        pytest.param(
            _set("workspace", "workflow", "default_queue", value="Nowhere"),
            "workspace.workflow.default_queue",
            "unknown task queue 'Nowhere'",
            id="workflow-default-queue-unknown",
        ),
        pytest.param(
            _set("workspace", "task_queues", 0, "target_workers", value="skills HAS 'billing' AND"),
            "workspace.task_queues.0.target_workers",
            "invalid TaskRouter expression",
            id="target-workers-dangling-and",
        ),
        pytest.param(
            _set("workspace", "task_queues", 0, "target_workers", value="skills == 'billing"),
            "workspace.task_queues.0.target_workers",
            "invalid TaskRouter expression",
            id="target-workers-unterminated-string",
        ),
    ],
)
def test_broken_file_raises_one_line_naming_file_key_and_problem(
    tmp_path: Path, bundled: Raw, change: Callable[[Raw], None], key_path: str, problem: str
) -> None:
    raw = copy.deepcopy(bundled)
    change(raw)
    path = write_routing(tmp_path, raw)

    message = routing_error(path)

    assert key_path in message
    assert problem in message


def test_invalid_yaml_raises_one_line_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("version: 1\nreasons: [unclosed\n  default: {}\n", encoding="utf-8")

    message = routing_error(path)

    assert "not valid YAML" in message
    assert "line" in message


def test_missing_file_raises_one_line_naming_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    message = routing_error(path)

    assert "cannot read" in message


@pytest.mark.parametrize("content", ["", "- a list\n", "just a string\n"])
def test_file_that_is_not_a_mapping_raises_one_line(tmp_path: Path, content: str) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(content, encoding="utf-8")

    message = routing_error(path)

    assert "mapping" in message
