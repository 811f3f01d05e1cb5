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
from escalator.api.keys import CLOCK, DISPATCHER, METRICS, NEW_ID, ROUTING, SETTINGS, STORE
from escalator.api.problems import error_middleware
from escalator.dispatcher import Dispatcher
from escalator.dispatcher.callback_urls import UrlPolicy
from escalator.dispatcher.callbacks import StatusCallbacks
from escalator.domain.ids import EscalationId
from escalator.errors import ConfigurationError
from escalator.metrics import Metrics
from escalator.reconciler import Reconciler
from escalator.routing import RoutingTable
from escalator.settings import Settings
from escalator.store import Store
from escalator.store.sql import open_store
from escalator.taskrouter import TaskRouterClient

__all__ = ["Dependencies", "create_app", "new_escalation_id", "status_callbacks", "utc_now"]


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
    )


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
        loop = asyncio.create_task(reconciler.run(), name="reconciler")
        yield
        reconciler.stop()
        try:
            async with asyncio.timeout(10):
                await loop
        except TimeoutError:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        if deps.taskrouter is None:
            await taskrouter.close()

    return reconciler_ctx


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
    app.add_routes(listing.routes)
    app.add_routes(streams.routes)
    app.add_routes(escalations.routes)
    app.add_routes(health.routes)
    app.add_routes(webhooks.routes)
    streams.install_streams(app, settings)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        store = deps.store or await open_store(
            settings.database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            run_migrations=settings.migrate_on_start,
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
        loop = asyncio.create_task(dispatcher.run(), name="dispatcher")
        yield
        dispatcher.stop()
        try:
            async with asyncio.timeout(10):
                await loop
        except TimeoutError:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        with contextlib.suppress(Exception):
            await app[STORE].release_leases(owner=owner)
        if deps.taskrouter is None:
            await taskrouter.close()
        if callbacks is not None:
            await callbacks.close()

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(dispatcher_ctx)
    app.cleanup_ctx.append(_reconciler_ctx(settings, routing, deps))
    return app
