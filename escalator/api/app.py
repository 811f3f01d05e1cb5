"""The application factory: routes, middleware, and the resources opened and closed with the app."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from escalator.api import escalations, health, listing, streams, webhooks
from escalator.api.health import DRAIN, Drain
from escalator.api.keys import CLOCK, DISPATCHER, METRICS, NEW_ID, ROUTING, SETTINGS, STORE
from escalator.api.problems import error_middleware
from escalator.dispatcher import Dispatcher
from escalator.dispatcher.callback_urls import UrlPolicy
from escalator.dispatcher.callbacks import StatusCallbacks
from escalator.domain.ids import EscalationId
from escalator.errors import ConfigurationError, StoreUnavailable
from escalator.logs import get_logger
from escalator.metrics import Metrics
from escalator.reconciler import Reconciler
from escalator.routing import RoutingTable
from escalator.settings import Settings
from escalator.store import Store
from escalator.store.notify import ChangeListener, change_listener
from escalator.store.sql import open_store
from escalator.taskrouter import TaskRouterClient

__all__ = [
    "Dependencies",
    "create_app",
    "new_escalation_id",
    "release_leases",
    "status_callbacks",
    "utc_now",
]

_log = get_logger(__name__)
_LEASE_OWNER = web.AppKey("lease_owner", str)
_RECONCILER = web.AppKey("reconciler", Reconciler)
_LISTENER = web.AppKey("change_listener", ChangeListener)


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def new_escalation_id() -> EscalationId:
    """A new, unguessable escalation id."""
    return EscalationId(f"esc_{uuid.uuid4().hex}")


@dataclass
class Dependencies:
    """What ``create_app`` would otherwise open from the settings; tests inject their own."""

    store: Store | None = None
    taskrouter: TaskRouterClient | None = None
    clock: Callable[[], datetime] = utc_now
    new_id: Callable[[], EscalationId] = new_escalation_id
    metrics: Metrics = field(default_factory=Metrics)
    dispatch: bool = True


def _taskrouter_from(settings: Settings) -> TaskRouterClient:
    if not (settings.twilio_account_sid and settings.twilio_auth_token and settings.workspace_sid):
        raise ConfigurationError(
            "TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and ESCALATOR_WORKSPACE_SID are needed "
            "to create tasks"
        )
    return TaskRouterClient(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
        workspace_sid=settings.workspace_sid,
        base_url=settings.taskrouter_url,
        timeout=settings.twilio_timeout,
        lookup_rate_per_second=settings.lookup_rate_per_second,
    )


def _stop_budget(app: web.Application) -> float:
    """How long a stopped loop may take to end its turn: 10 s, or while draining what is left
    of the grace period, less a moment to give the leases back and close the store."""
    drain = app[DRAIN]
    if not drain.draining:
        return 10.0
    return max(0.0, drain.left(0.0) - min(1.0, app[SETTINGS].shutdown_grace / 5))


async def _finish(loop: asyncio.Task[None], within: float) -> None:
    """Wait for a stopped loop's last turn; cancel it after ``within`` seconds (a lease it
    held is given back ambiguous, so its task is looked for before it is created again)."""
    try:
        async with asyncio.timeout(within):
            await loop
    except TimeoutError:
        _log.warning("background.cancelled", loop=loop.get_name(), waited=round(within, 3))
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


async def _stop_loops(app: web.Application) -> None:
    """On shutdown (once the HTTP socket is closed), the background loops end their turn
    while requests drain."""
    for loop in (app.get(DISPATCHER), app.get(_RECONCILER), app.get(_LISTENER)):
        if loop is not None:
            loop.stop()


async def release_leases(app: web.Application) -> None:
    """Give back the outbox rows this process holds, so another replica takes them at once.

    Best effort: leases expire anyway, so a failure is logged and counted, never raised.
    """
    owner, store, metrics = app.get(_LEASE_OWNER), app.get(STORE), app[METRICS]
    if owner is None or store is None:
        return
    try:
        released = await store.release_leases(owner=owner)
    except StoreUnavailable:
        metrics.store_unavailable.labels(where="shutdown").inc()
        _log.warning("dispatcher.leases_kept", reason="store_unavailable")
        return
    except Exception:
        metrics.dispatcher_errors.inc()
        _log.exception("dispatcher.leases_kept", reason="error")
        return
    _log.info("dispatcher.leases_released", count=released)


def _reconciler_ctx(
    settings: Settings, routing: RoutingTable, deps: Dependencies
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context that runs the reconciler loop with the app."""

    async def reconciler_ctx(app: web.Application) -> AsyncIterator[None]:
        # `dispatch` switches every background loop: tests turn them by hand.
        if not deps.dispatch:
            yield
            return
        taskrouter = deps.taskrouter or _taskrouter_from(settings)
        dispatcher = app.get(DISPATCHER)
        reconciler = Reconciler(
            store=app[STORE],
            taskrouter=taskrouter,
            clock=deps.clock,
            metrics=deps.metrics,
            cascade=routing.file.cascade,
            stale_after=settings.reconcile_after,
            interval=settings.reconcile_interval,
            batch=settings.reconcile_batch,
            concurrency=settings.reconcile_concurrency,
            reset_window=settings.reconcile_reset_window,
            max_backoff=settings.retry_max_backoff,
            on_effects=dispatcher.wake if dispatcher is not None else None,
        )
        app[_RECONCILER] = reconciler
        loop = asyncio.create_task(reconciler.run(), name="reconciler")
        yield
        reconciler.stop()
        await _finish(loop, _stop_budget(app))
        if deps.taskrouter is None:
            await taskrouter.close()

    return reconciler_ctx


def _listener_ctx(deps: Dependencies) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context that listens for other replicas' commits (PostgreSQL only)."""

    async def listener_ctx(app: web.Application) -> AsyncIterator[None]:
        dispatcher = app.get(DISPATCHER)
        listener = (
            change_listener(
                app[STORE],
                metrics=deps.metrics,
                on_outbox=dispatcher.wake if dispatcher is not None else None,
            )
            if deps.dispatch
            else None
        )
        if listener is None:
            yield
            return
        app[_LISTENER] = listener
        loop = asyncio.create_task(listener.run(), name="change-listener")
        yield
        listener.stop()
        await _finish(loop, _stop_budget(app))

    return listener_ctx


def status_callbacks(settings: Settings, metrics: Metrics) -> StatusCallbacks | None:
    """The sender of status callbacks, when a secret to sign them is configured."""
    if settings.callback_secret is None:
        return None
    return StatusCallbacks(
        secret=settings.callback_secret.get_secret_value(),
        policy=UrlPolicy(settings.callback_allow_http, settings.callback_allow_private),
        metrics=metrics,
        timeout=settings.callback_timeout,
        max_attempts=settings.callback_max_attempts,
    )


def create_app(
    settings: Settings, *, routing: RoutingTable, deps: Dependencies | None = None
) -> web.Application:
    """The escalator web application."""
    deps = deps or Dependencies()
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[ROUTING] = routing
    app[METRICS] = deps.metrics
    app[CLOCK] = deps.clock
    app[NEW_ID] = deps.new_id
    app[DRAIN] = Drain()
    app.add_routes(listing.routes)
    app.add_routes(streams.routes)
    app.add_routes(escalations.routes)
    app.add_routes(health.routes)
    app.add_routes(webhooks.routes)
    streams.install_streams(app, settings)
    app.on_shutdown.append(_stop_loops)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        store = deps.store or await open_store(
            settings.database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            run_migrations=settings.migrate_on_start,
            recent_escalations=settings.recent_escalations,
        )
        app[STORE] = store
        yield
        if deps.store is None:
            await store.close()

    async def dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
        if not deps.dispatch:
            yield
            return
        if not settings.workflow_sid:
            raise ConfigurationError("ESCALATOR_WORKFLOW_SID is needed to create tasks")
        taskrouter = deps.taskrouter or _taskrouter_from(settings)
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        callbacks = status_callbacks(settings, deps.metrics)
        dispatcher = Dispatcher(
            store=app[STORE],
            taskrouter=taskrouter,
            workflow_sid=settings.workflow_sid,
            clock=deps.clock,
            metrics=deps.metrics,
            owner=owner,
            batch=settings.dispatch_batch,
            lease_seconds=settings.dispatch_lease_seconds,
            interval=settings.dispatch_interval,
            max_backoff=settings.retry_max_backoff,
            call_timeout=settings.twilio_timeout,
            callbacks=callbacks,
        )
        app[DISPATCHER] = dispatcher
        app[_LEASE_OWNER] = owner
        app[STORE].hand_new_work_to(dispatcher)
        loop = asyncio.create_task(dispatcher.run(), name="dispatcher")
        yield
        app[STORE].hand_new_work_to(None)
        dispatcher.stop()
        await _finish(loop, _stop_budget(app))
        await release_leases(app)
        if deps.taskrouter is None:
            await taskrouter.close()
        if callbacks is not None:
            await callbacks.close()

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(dispatcher_ctx)
    app.cleanup_ctx.append(_reconciler_ctx(settings, routing, deps))
    app.cleanup_ctx.append(_listener_ctx(deps))
    return app
