"""What the commands share: waiting for a signal, serving the app, starting the simulator."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from escalator.api import create_app
from escalator.errors import EscalatorError
from escalator.logs import get_logger
from escalator.routing import RoutingTable
from escalator.settings import Settings
from escalator.simulator import RunningSimulator, start_simulator
from escalator.taskrouter.provision import ProvisionedWorkspace, provision_workspace

__all__ = ["provision_simulator", "serve_app", "start_simulator_or_fail", "until_signalled"]

_log = get_logger(__name__)


async def until_signalled() -> None:
    """Return on SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def serve_app(
    settings: Settings, routing: RoutingTable, *, on_ready: Callable[[], Awaitable[None]] | None
) -> None:
    """Serve escalator until a signal, then shut down cleanly."""
    runner = web.AppRunner(create_app(settings, routing=routing), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, shutdown_timeout=10)
        try:
            await site.start()
        except OSError as exc:
            raise EscalatorError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
            ) from None
        _log.info("service.started", host=settings.host, port=settings.port)
        if on_ready is not None:
            await on_ready()
        await until_signalled()
        _log.info("service.stopping")
    finally:
        await runner.cleanup()


async def start_simulator_or_fail(
    host: str,
    port: int,
    account_sid: str,
    auth_token: str,
    *,
    virtual_clock: bool = False,
    seed: int = 0,
) -> RunningSimulator:
    """Start the simulator; a busy port is one readable error, not a traceback."""
    try:
        return await start_simulator(
            host=host,
            port=port,
            account_sid=account_sid,
            auth_token=auth_token,
            virtual_clock=virtual_clock,
            seed=seed,
        )
    except OSError as exc:
        raise EscalatorError(
            f"cannot start the simulator on {host}:{port}: {exc.strerror}"
        ) from None


async def provision_simulator(
    simulator: RunningSimulator,
    account_sid: str,
    auth_token: str,
    routing: RoutingTable,
    *,
    callbacks_to: str | None = None,
) -> ProvisionedWorkspace:
    """Create the routing file's workspace in the simulator, through the twilio SDK; with
    ``callbacks_to`` (escalator's public URL), its event and assignment callbacks go there."""
    async with AsyncTwilioHttpClient() as http:
        client = Client(account_sid, auth_token, http_client=http, environment={})
        client.taskrouter.base_url = simulator.url
        return await provision_workspace(
            client,
            routing.file.workspace,
            event_callback_url=f"{callbacks_to}/taskrouter/events" if callbacks_to else None,
            assignment_callback_url=(
                f"{callbacks_to}/taskrouter/assignment" if callbacks_to else None
            ),
        )
