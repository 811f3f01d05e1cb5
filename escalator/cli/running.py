"""What the commands share: waiting for a signal, serving the app, starting the simulator."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import NoReturn

from aiohttp import web
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from escalator.api import create_app
from escalator.api.app import release_leases
from escalator.api.health import DRAIN
from escalator.errors import EscalatorError
from escalator.logs import get_logger
from escalator.routing import RoutingTable
from escalator.settings import Settings
from escalator.simulator import RunningSimulator, start_simulator
from escalator.taskrouter.provision import ProvisionedWorkspace, provision_workspace

__all__ = [
    "EXIT_OVERRAN",
    "provision_simulator",
    "serve_app",
    "start_simulator_or_fail",
    "until_signalled",
]

_log = get_logger(__name__)
# The exit status when the drain outlasted the grace period; a second signal exits with
# 128 + its number (130 for SIGINT, 143 for SIGTERM), as a shell reports a signalled process.
EXIT_OVERRAN = 1
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


def _exit_now(code: int, event: str, **fields: object) -> NoReturn:
    """Exit at once, running no more cleanup. Nothing acknowledged is lost: every ack follows
    its commit, and the leases this process holds expire for another one to take over."""
    _log.warning(event, exit_code=code, **fields)
    sys.stderr.flush()
    os._exit(code)


class _Signals:
    """SIGINT and SIGTERM while serving: the first starts the drain, the second exits at once."""

    def __init__(self) -> None:
        self.first: asyncio.Future[signal.Signals] = asyncio.get_running_loop().create_future()

    def __enter__(self) -> _Signals:
        loop = asyncio.get_running_loop()
        for signum in _SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        for signum in _SIGNALS:
            loop.remove_signal_handler(signum)

    def _on_signal(self, signum: signal.Signals) -> None:
        if not self.first.done():
            self.first.set_result(signum)
            return
        _exit_now(128 + signum, "service.exit_now", signal=signum.name)


async def serve_app(
    settings: Settings, routing: RoutingTable, *, on_ready: Callable[[], Awaitable[None]] | None
) -> None:
    """Serve escalator until SIGINT or SIGTERM, then drain within the grace period."""
    app = create_app(settings, routing=routing)
    # aiohttp may wait this long twice: for in-flight handlers, then for them to end once
    # cancelled; both fit in what the grace period leaves after the delay.
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=(settings.shutdown_grace - settings.shutdown_delay) / 2,
    )
    await runner.setup()
    # What startup made (modules, the routing table, pools) lives as long as the process:
    # frozen, the collector stops walking it. A full collection over it took some 50 ms,
    # stalling every request meanwhile (the max at 200 escalations/s went from 52-62 ms to
    # 14 ms in a probe of bench/load.py's open loop).
    gc.collect()
    gc.freeze()
    started = time.monotonic()
    with _Signals() as signals:
        try:
            site = web.TCPSite(runner, settings.host, settings.port)
            try:
                await site.start()
            except OSError as exc:
                raise EscalatorError(
                    f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
                ) from None
            _log.info("service.started", host=settings.host, port=settings.port)
            if on_ready is not None:
                await on_ready()
            signum = await signals.first
        except BaseException:
            await runner.cleanup()
            raise
        await _drain(app, runner, settings, signum=signum, uptime=time.monotonic() - started)


async def _drain(
    app: web.Application,
    runner: web.AppRunner,
    settings: Settings,
    *,
    signum: signal.Signals,
    uptime: float,
) -> None:
    """Readiness fails at once; after the delay the listener closes, in-flight requests end
    (streams are ended), the loops end their turn, leases are given back and the store is
    closed, all within the grace period; past it, leases are given back and the process exits."""
    began = time.monotonic()
    drain = app[DRAIN]
    drain.start(settings.shutdown_grace)
    _log.info(
        "service.stopping",
        signal=signum.name,
        uptime_seconds=round(uptime, 3),
        grace_seconds=settings.shutdown_grace,
        delay_seconds=settings.shutdown_delay,
    )
    if settings.shutdown_delay > 0:
        # Load balancers see readiness fail and stop routing here; requests are still served.
        await asyncio.sleep(settings.shutdown_delay)
    last_resort = min(1.0, settings.shutdown_grace / 10)
    deadline = asyncio.timeout(max(0.0, drain.left(0.0) - last_resort))
    try:
        async with deadline:
            await runner.cleanup()
    except TimeoutError:
        if not deadline.expired():
            raise
        _log.error("service.stop_overran", grace_seconds=settings.shutdown_grace)
        try:
            async with asyncio.timeout(last_resort):
                await release_leases(app)
        except TimeoutError:
            _log.warning("dispatcher.leases_kept", reason="no_time_left")
        _exit_now(
            EXIT_OVERRAN,
            "service.stopped",
            clean=False,
            duration_seconds=round(time.monotonic() - began, 3),
        )
    except Exception:
        _log.exception("service.stop_failed")
        raise EscalatorError("the shutdown failed; the log says why") from None
    _log.info("service.stopped", clean=True, duration_seconds=round(time.monotonic() - began, 3))


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
