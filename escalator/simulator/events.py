"""TaskRouter Events: the record of every state change, kept 30 days, and its subscribers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from escalator.simulator.clock import Clock

__all__ = ["COMMON_FIELDS", "RETENTION", "EventLog", "EventRecord", "Subscriber", "snake_case"]

# Twilio keeps Events for 30 days (Event resource page).
RETENTION = timedelta(days=30)
# The fields every event callback carries (TaskRouter Events reference, "Event Callbacks").
COMMON_FIELDS = (
    "EventType",
    "AccountSid",
    "WorkspaceSid",
    "WorkspaceName",
    "EventDescription",
    "ResourceType",
    "ResourceSid",
    "Timestamp",
)
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake_case(name: str) -> str:
    """`TaskQueueSid` -> `task_queue_sid`, as the Events API names `event_data` keys."""
    return _CAMEL.sub("_", name).lower()


@dataclass(frozen=True)
class EventRecord:
    """One event: the callback's form fields plus what the Events API shows."""

    sid: str
    workspace_sid: str
    event_type: str
    description: str
    resource_type: str
    resource_sid: str
    date: datetime
    actor_type: str
    actor_sid: str
    fields: Mapping[str, str]

    def get(self, name: str) -> str | None:
        """A callback field, e.g. `TaskSid`; None when the event has none."""
        return self.fields.get(name)

    @property
    def data(self) -> dict[str, str]:
        """The event-specific fields in snake_case: the Events API's `event_data`."""
        return {snake_case(k): v for k, v in self.fields.items() if k not in COMMON_FIELDS}


Subscriber = Callable[[EventRecord], None]


@dataclass
class EventLog:
    """Every event in time order; subscribers are called synchronously with each new one."""

    clock: Clock
    _records: list[EventRecord] = field(default_factory=list)
    _by_sid: dict[str, EventRecord] = field(default_factory=dict)
    _subscribers: list[Subscriber] = field(default_factory=list)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback` with every event from now on; returns a function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def append(self, record: EventRecord) -> None:
        """Record `record`, forget events past retention, and tell the subscribers."""
        self._prune()
        self._records.append(record)
        self._by_sid[record.sid] = record
        for subscriber in tuple(self._subscribers):
            subscriber(record)

    def _prune(self) -> None:
        horizon = self.clock.now() - RETENTION
        expired = 0
        while expired < len(self._records) and self._records[expired].date < horizon:
            del self._by_sid[self._records[expired].sid]
            expired += 1
        if expired:
            del self._records[:expired]

    def get(self, workspace_sid: str, sid: str) -> EventRecord | None:
        """The event with this SID in this workspace, if still kept."""
        self._prune()
        record = self._by_sid.get(sid)
        return record if record and record.workspace_sid == workspace_sid else None

    def __iter__(self) -> Iterator[EventRecord]:
        self._prune()
        return iter(tuple(self._records))

    def of_type(self, event_type: str, **fields: str) -> list[EventRecord]:
        """Events of one type whose callback fields equal `fields` (e.g. TaskSid=...)."""
        return [
            r
            for r in self
            if r.event_type == event_type and all(r.get(k) == v for k, v in fields.items())
        ]

    def types(self, **fields: str) -> list[str]:
        """The event types, in order, of events whose callback fields equal `fields`."""
        return [r.event_type for r in self if all(r.get(k) == v for k, v in fields.items())]
