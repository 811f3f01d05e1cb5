"""What the replicas' JSON logs say about a run: events by name, warnings and errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["ALARMS", "digest_logs"]

# Events that should never appear, whatever the faults: each one is a bug to chase.
ALARMS = frozenset(
    {
        "task.duplicate_created",
        "task.duplicates_found",
        "request.crashed",
        "request.failed",
        "outbox.item_failed",
        "outbox.item_crashed",
        "dispatcher.turn_failed",
        "reconciler.turn_failed",
        "reconciler.item_failed",
        "taskrouter.event_failed",
        "webhook.bad_signature",
    }
)
_SHOWN = 8


def digest_logs(paths: list[Path]) -> dict[str, Any]:
    """Counts of every event, of 429s seen, and the first lines of each alarm."""
    events: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    alarms: dict[str, list[str]] = {}
    tracebacks = 0
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if not line.startswith("{"):
                tracebacks += line.startswith("Traceback")
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            name = str(record.get("event", "?"))
            events[name] += 1
            levels[str(record.get("level", "?"))] += 1
            if isinstance(record.get("status"), int) and record["status"] >= 400:
                statuses[f"{name} {record['status']}"] += 1
            if name in ALARMS and len(alarms.setdefault(name, [])) < _SHOWN:
                alarms[name].append(line[:1500])
    return {
        "events": dict(events.most_common()),
        "levels": dict(levels),
        "twilio_errors_seen": dict(statuses.most_common()),
        "alarms": alarms,
        "tracebacks_outside_json": tracebacks,
    }
