"""A thin adapter over the twilio SDK (tasks, activities, workers); Twilio errors mapped to ours."""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from twilio.base import values
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from escalator.domain.events import TaskRouterEvent
from escalator.domain.ids import EscalationId, ReservationSid, TaskSid, WorkerSid
from escalator.errors import PermanentTwilioError, TransientTwilioError
from escalator.taskrouter.ratelimit import RateLimiter
from escalator.taskrouter.records import ReservationRecord, TaskRecord, event_of_record

__all__ = ["LOOKUP_IDS_PER_REQUEST", "TaskLookup", "TaskRouterClient", "parse_retry_after"]

# The SDK's exceptions drop the response headers, so Retry-After would be lost. The HTTP client
# below notes them in a context variable: each asyncio task has its own copy, so concurrent
# requests never see each other's headers.
_response_headers: ContextVar[Mapping[str, str] | None] = ContextVar(
    "escalator_twilio_response_headers", default=None
)

# 4xx answers that retrying can fix: our credentials or a conflict may change, or Twilio asks
# us to slow down. Every other 4xx is Twilio refusing the request itself.
_TRANSIENT_4XX = frozenset({401, 403, 408, 409, 425, 429})

# Escalation ids per EvaluateTaskAttributes expression. Twilio documents no length limit for
# the expression; it travels in the query string, where 50 ids (about 2,300 characters once
# URL-encoded) stay well below the 8 KB request lines that servers and proxies commonly accept.
LOOKUP_IDS_PER_REQUEST = 50
# A lookup matches a handful of tasks at most; one page almost always holds them all.
_LOOKUP_PAGE_SIZE = 1000
# TaskRouter documents no Retry-After; after a 429 without one, the limit's own second.
_DEFAULT_HOLD_OFF = 1.0
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]+$")


@dataclass(frozen=True, slots=True)
class TaskLookup:
    """The tasks found for some escalation ids, oldest first, and what finding them cost."""

    tasks: dict[EscalationId, tuple[TaskSid, ...]]
    requests: int
    waited: float  # seconds spent waiting for the rate limit


class _HeaderNotingHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    async def request(self, *args: Any, **kwargs: Any) -> Response:
        response: Response = await super().request(*args, **kwargs)
        _response_headers.set(dict(response.headers or {}))
        return response


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


class TaskRouterClient:
    """Creates and finds escalation tasks, and moves workers, in one TaskRouter workspace."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        workspace_sid: str,
        base_url: str = "https://taskrouter.twilio.com",
        timeout: float = 10.0,
        lookup_rate_per_second: float = 3.0,
        lookup_ids_per_request: int = LOOKUP_IDS_PER_REQUEST,
        lookup_limiter: RateLimiter | None = None,
    ) -> None:
        self._http = _HeaderNotingHttpClient()
        # One budget per workspace in this process, whoever looks (dispatcher, cancels).
        self._lookup_limiter = lookup_limiter or RateLimiter(lookup_rate_per_second)
        self._lookup_ids = max(1, min(lookup_ids_per_request, LOOKUP_IDS_PER_REQUEST))
        # environment={}: the SDK must not pick up TWILIO_EDGE/REGION and rewrite the base URL.
        self._client = Client(account_sid, auth_token, http_client=self._http, environment={})
        self._client.taskrouter.base_url = base_url.rstrip("/")
        self._workspace = self._client.taskrouter.v1.workspaces(workspace_sid)
        self._timeout = timeout
        # Activity names to SIDs; an Activity cannot be renamed into another's availability,
        # and a workspace has at most 100 of them, so one list is kept for the process.
        self._activities: dict[str, str] = {}

    @property
    def sdk(self) -> Client:
        """The underlying twilio SDK client (for provisioning)."""
        return self._client

    @asynccontextmanager
    async def _call(self, what: str) -> AsyncIterator[None]:
        _response_headers.set(None)
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except TwilioRestException as exc:
            raise self._translate(exc, what) from exc
        except aiohttp.ClientConnectorError as exc:
            raise TransientTwilioError(f"{what}: cannot connect to TaskRouter") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The request may have reached TaskRouter before the connection failed.
            raise TransientTwilioError(
                f"{what}: no answer from TaskRouter ({type(exc).__name__})",
                may_have_succeeded=True,
            ) from exc
        except TwilioException as exc:
            # Listing raises a bare TwilioException("Unable to fetch page", response).
            response = exc.args[1] if len(exc.args) > 1 else None
            status = getattr(response, "status_code", None)
            if isinstance(status, int):
                raise self._translate(
                    TwilioRestException(status, "", str(exc.args[0]), _code_of(response)), what
                ) from exc
            raise TransientTwilioError(f"{what}: {exc}", may_have_succeeded=True) from exc

    @staticmethod
    def _translate(exc: TwilioRestException, what: str) -> Exception:
        status = int(exc.status)
        code = int(exc.code) if isinstance(exc.code, int) else None
        message = f"{what}: {exc.msg}"
        if status >= 500 or status in _TRANSIENT_4XX:
            headers = _response_headers.get() or {}
            retry_after = parse_retry_after(
                next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
            )
            return TransientTwilioError(
                message,
                status=status,
                code=code,
                retry_after=retry_after,
                may_have_succeeded=status >= 500,
            )
        return PermanentTwilioError(message, status=status, code=code)

    async def create_task(
        self, *, attributes: str, workflow_sid: str, priority: int, ttl: int, channel: str
    ) -> TaskSid:
        """Create a task; the SID of the new task."""
        async with self._call("create task"):
            task = await self._workspace.tasks.create_async(
                attributes=attributes,
                workflow_sid=workflow_sid,
                priority=priority,
                timeout=ttl,
                task_channel=channel,
            )
        return TaskSid(str(task.sid))

    @property
    def lookup_ids_per_request(self) -> int:
        """How many escalation ids one lookup request carries at most."""
        return self._lookup_ids

    async def find_tasks(
        self, escalation_ids: Sequence[EscalationId]
    ) -> dict[EscalationId, TaskSid]:
        """The tasks that already carry these escalation ids (oldest first wins)."""
        found = await self.look_up_tasks(escalation_ids)
        return {escalation_id: sids[0] for escalation_id, sids in found.tasks.items()}

    async def lookup_turn(self, *, max_wait: float = math.inf) -> float:
        """Wait for a lookup request's turn of the rate limit (the seconds waited), for a
        caller that decides what to look up only once its turn has come: it passes
        ``turn_taken=True`` to the ``look_up_tasks`` it calls at once."""
        return await self._lookup_limiter.acquire(max_wait=max_wait)

    async def look_up_tasks(
        self,
        escalation_ids: Sequence[EscalationId],
        *,
        max_wait: float = math.inf,
        turn_taken: bool = False,
    ) -> TaskLookup:
        """Every task carrying each of these escalation ids, oldest first (ids without one are
        left out): ``lookup_ids_per_request`` ids to a request, every page read, each request
        in its turn of the lookup rate limit (``LookupDeferred`` when a turn is more than
        ``max_wait`` away); with ``turn_taken``, the first request uses the caller's turn."""
        wanted = list(dict.fromkeys(escalation_ids))
        if any(not _SAFE_ID.match(escalation_id) for escalation_id in wanted):
            raise ValueError("an escalation id that cannot be quoted in an expression")
        found: dict[EscalationId, list[TaskSid]] = {}
        requests, waited = 0, 0.0
        for start in range(0, len(wanted), self._lookup_ids):
            chunk = wanted[start : start + self._lookup_ids]
            expression = (
                f'escalation_id == "{chunk[0]}"'
                if len(chunk) == 1
                else "escalation_id IN [{}]".format(", ".join(f'"{i}"' for i in chunk))
            )

            def first_page(expression: str = expression) -> Awaitable[Any]:
                return self._workspace.tasks.page_async(  # type: ignore[no-any-return]
                    evaluate_task_attributes=expression,
                    page_size=_LOOKUP_PAGE_SIZE,
                    ordering="DateCreated:asc",
                )

            page: Any = None
            while page is None or page.next_page_url:
                fetch = first_page if page is None else page.next_page_async
                if turn_taken:
                    turn_taken = False
                else:
                    waited += await self._lookup_limiter.acquire(max_wait=max_wait - waited)
                requests += 1
                page = await self._lookup_page(fetch)
                await self._collect(page, set(chunk), found)
        return TaskLookup(
            tasks={escalation_id: tuple(sids) for escalation_id, sids in found.items()},
            requests=requests,
            waited=waited,
        )

    async def _lookup_page(self, fetch: Callable[[], Awaitable[Any]]) -> Any:
        try:
            async with self._call("find tasks"):
                return await fetch()
        except TransientTwilioError as exc:
            if exc.status == 429:
                self._lookup_limiter.hold_off(exc.retry_after or _DEFAULT_HOLD_OFF)
            raise

    async def _collect(
        self, page: Any, wanted: set[str], found: dict[EscalationId, list[TaskSid]]
    ) -> None:
        for task in page:
            attributes = task.attributes
            if attributes is None:
                # Twilio's description leaves attributes out of list pages: fetch the task.
                async with self._call("fetch task"):
                    attributes = (await self._workspace.tasks(task.sid).fetch_async()).attributes
            escalation_id = _escalation_id_of(attributes)
            if escalation_id in wanted:
                found.setdefault(EscalationId(escalation_id), []).append(TaskSid(str(task.sid)))

    async def activity_sid(self, name: str) -> str:
        """The SID of the workspace's activity named ``name`` (listed once, then cached)."""
        if name not in self._activities:
            async with self._call("list activities"):
                listed = await self._workspace.activities.list_async(page_size=100)
            self._activities = {str(a.friendly_name): str(a.sid) for a in listed}
        try:
            return self._activities[name]
        except KeyError:
            raise PermanentTwilioError(f"the workspace has no activity named {name!r}") from None

    async def timeout_activity_sid(self) -> str | None:
        """The activity TaskRouter moves a worker to when a reservation times out."""
        async with self._call("fetch workspace"):
            workspace = await self._workspace.fetch_async()
        sid = workspace.timeout_activity_sid
        return str(sid) if sid else None

    async def worker_activity_sid(self, worker_sid: str) -> str | None:
        """The worker's current activity."""
        async with self._call("fetch worker"):
            worker = await self._workspace.workers(worker_sid).fetch_async()
        return str(worker.activity_sid) if worker.activity_sid else None

    async def set_worker_activity(self, worker_sid: str, activity_sid: str) -> None:
        """Move the worker into ``activity_sid``."""
        async with self._call("update worker"):
            await self._workspace.workers(worker_sid).update_async(activity_sid=activity_sid)

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._http.close()

    async def fetch_task(self, task_sid: TaskSid) -> TaskRecord | None:
        """The task as TaskRouter shows it now, or None when it is gone (404)."""
        try:
            async with self._call("fetch task"):
                task = await self._workspace.tasks(task_sid).fetch_async()
        except PermanentTwilioError as exc:
            # Lifecycle page: ended tasks are deleted about 5 minutes later; then only the
            # Events API remembers them.
            if exc.status == 404:
                return None
            raise
        return TaskRecord(
            sid=task_sid,
            assignment_status=str(task.assignment_status or ""),
            reason=str(task.reason) if task.reason else None,
            date_updated=_moment(task.date_updated),
        )

    async def task_reservations(self, task_sid: TaskSid) -> list[ReservationRecord]:
        """Every reservation of a task, whatever its status."""
        async with self._call("list reservations"):
            listed = await self._workspace.tasks(task_sid).reservations.list_async(page_size=1000)
        return [
            ReservationRecord(
                sid=ReservationSid(str(r.sid)),
                status=str(r.reservation_status or ""),
                worker_sid=WorkerSid(str(r.worker_sid)) if r.worker_sid else None,
                worker_name=str(r.worker_name) if r.worker_name else None,
                date_created=_moment(r.date_created),
                date_updated=_moment(r.date_updated or r.date_created),
            )
            for r in listed
        ]

    async def task_events(self, task_sid: TaskSid, *, since: datetime) -> list[TaskRouterEvent]:
        """The Events API's record of a task since ``since``, oldest first, every page read."""
        return await self._events(since=since, task_sid=task_sid, event_type=values.unset)

    async def events_of_type(self, event_type: str, *, since: datetime) -> list[TaskRouterEvent]:
        """The workspace's events of one type since ``since``, oldest first, every page read."""
        return await self._events(since=since, task_sid=values.unset, event_type=event_type)

    async def _events(
        self, *, since: datetime, task_sid: object, event_type: object
    ) -> list[TaskRouterEvent]:
        async with self._call("list events"):
            # StartDate, not Minutes: Minutes defaults to 15 and would miss older facts.
            listed = await self._workspace.events.list_async(
                start_date=since, task_sid=task_sid, event_type=event_type, page_size=1000
            )
        facts = [
            event_of_record(
                sid=str(e.sid) if e.sid else None,
                event_type=str(e.event_type or ""),
                description=str(e.description) if e.description else None,
                resource_sid=str(e.resource_sid) if e.resource_sid else None,
                event_date=_moment(e.event_date, since),
                event_data=e.event_data if isinstance(e.event_data, dict) else None,
            )
            for e in reversed(listed)  # the Events API lists newest first
            if e.event_type
        ]
        return sorted(facts, key=lambda fact: fact.occurred_at)

    async def cancel_task(self, task_sid: TaskSid, *, reason: str) -> None:
        """Cancel a task (TaskRouter allows it only until the task is assigned)."""
        async with self._call("cancel task"):
            await self._workspace.tasks(task_sid).update_async(
                assignment_status="canceled", reason=reason
            )


def _escalation_id_of(attributes: object) -> str | None:
    try:
        decoded = json.loads(str(attributes))
    except ValueError:
        return None
    value = decoded.get("escalation_id") if isinstance(decoded, dict) else None
    return value if isinstance(value, str) else None


def _code_of(response: object) -> int | None:
    try:
        code = json.loads(str(getattr(response, "text", ""))).get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


def _moment(value: object, default: datetime | None = None) -> datetime:
    """A datetime the SDK deserialised (it hands back the raw value when it could not)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return default or datetime.now(UTC)
