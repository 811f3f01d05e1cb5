"""The fault suite's checker can fail: each kind of breach it must count, on made-up records."""

from __future__ import annotations

from typing import Any

from tests.chaos.verify import SimTask, verdict


def _escalation(
    escalation_id: str,
    status: str,
    *,
    task_sid: str | None = None,
    outcome: str | None = None,
    events: tuple[str, ...] = (),
) -> dict[str, Any]:
    history = [{"event": "escalation.received", "status": "received", "outcome": None}]
    history += [{"event": event, "status": status, "outcome": outcome} for event in events]
    return {
        "id": escalation_id,
        "status": status,
        "outcome": outcome,
        "task_sid": task_sid,
        "history": history,
    }


def _task(sid: str, escalation_id: str | None, status: str, reason: str | None = None) -> SimTask:
    return SimTask(sid, escalation_id, status, reason, live=True)


def _check(escalations: list[dict[str, Any]], tasks: list[SimTask], **kwargs: Any) -> Any:
    return verdict(
        acknowledged=kwargs.get("acknowledged", {e["id"] for e in escalations}),
        escalations={e["id"]: e for e in escalations},
        tasks={t.sid: t for t in tasks},
        key_violations=kwargs.get("key_violations", {}),
    )


def test_matching_records_count_nothing() -> None:
    result = _check(
        [
            _escalation("e1", "completed", task_sid="WT1", outcome="completed"),
            _escalation("e2", "canceled", task_sid="WT2", outcome="ttl_expired"),
            _escalation("e3", "queued", task_sid="WT3"),
            _escalation("e4", "canceled", outcome="canceled_by_client"),
        ],
        [
            _task("WT1", "e1", "completed"),
            _task("WT2", "e2", "canceled", "Task TTL Exceeded"),
            _task("WT3", "e3", "pending"),
        ],
    )
    assert result.line == "lost=0 duplicated=0 mismatched=0"


def test_an_acknowledged_escalation_the_service_lacks_or_without_a_task_is_lost() -> None:
    result = _check(
        [_escalation("e1", "received"), _escalation("e2", "failed", outcome="twilio_rejected")],
        [],
        acknowledged={"e1", "e2", "e3"},
    )
    assert len(result.lost) == 3


def test_a_second_task_an_unknown_task_and_a_key_answered_twice_are_duplicates() -> None:
    result = _check(
        [_escalation("e1", "queued", task_sid="WT1")],
        [
            _task("WT1", "e1", "pending"),
            _task("WT2", "e1", "pending"),
            _task("WT3", "nobody", "pending"),
            _task("WT4", None, "pending"),
        ],
        key_violations={"key-1": {"e1", "e9"}},
    )
    assert len(result.duplicated) == 4


def test_a_status_or_outcome_that_disagrees_with_the_task_is_a_mismatch() -> None:
    result = _check(
        [
            _escalation("e1", "queued", task_sid="WT1"),
            _escalation("e2", "canceled", task_sid="WT2", outcome="workflow_timeout"),
            _escalation("e3", "completed", task_sid="WT9", outcome="completed"),
            _escalation("e4", "queued"),
        ],
        [
            _task("WT1", "e1", "completed"),
            _task("WT2", "e2", "canceled", "Task TTL Exceeded"),
            _task("WT4", "e4", "pending"),
        ],
    )
    assert len(result.mismatched) == 4


def test_a_task_left_routing_after_its_escalation_ended_is_a_mismatch_even_if_refused() -> None:
    refused = ("task.after_end", "task.cancel_not_applied")
    result = _check(
        [
            _escalation("e1", "canceled", outcome="canceled_by_client", events=("task.after_end",)),
            _escalation("e2", "canceled", outcome="canceled_by_client", events=refused),
        ],
        [_task("WT1", "e1", "pending"), _task("WT2", "e2", "completed")],
    )
    assert len(result.mismatched) == 2


def test_a_refused_client_cancel_is_checked_against_its_task_like_any_other() -> None:
    refused = ("escalation.cancel_requested", "task.cancel_not_applied")
    result = _check(
        [
            _escalation("e1", "completed", outcome="completed", task_sid="WT1", events=refused),
            _escalation(
                "e2", "canceled", outcome="canceled_by_client", task_sid="WT2", events=refused
            ),
        ],
        [_task("WT1", "e1", "completed"), _task("WT2", "e2", "assigned")],
    )
    assert [line.split(":")[0] for line in result.mismatched] == [
        "status canceled but task assigned"
    ]
    assert result.notes["client cancel refused by TaskRouter (a worker accepted first)"] == 2
