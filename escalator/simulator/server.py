"""Running the simulator on a real socket, for tests, the demo and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from escalator.simulator.app import create_simulator_app
from escalator.simulator.clock import Clock, VirtualClock
from escalator.simulator.engine import Engine
from escalator.simulator.state import SimulatorState

__all__ = ["RunningSimulator", "start_simulator"]


@dataclass
class RunningSimulator:
    """A simulator listening on `url`; `close()` stops it."""

    url: str
    state: SimulatorState
    _runner: web.AppRunner

    @property
    def engine(self) -> Engine:
        """The routing engine, to accept, reject or move workers in process."""
        return self.state.engine

    @property
    def clock(self) -> Clock:
        """The simulator's clock; a `VirtualClock` when started with `virtual_clock=True`."""
        return self.state.clock

    async def advance(self, seconds: float) -> None:
        """Move the virtual clock forward, running due timers; refused on the real clock."""
        if not isinstance(self.state.clock, VirtualClock):
            raise TypeError("the simulator runs on the real clock")
        await self.state.clock.advance(seconds)

    async def close(self) -> None:
        """Stop listening and release the socket."""
        await self._runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_simulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    account_sid: str,
    auth_token: str,
    virtual_clock: bool = False,
    seed: int = 0,
) -> RunningSimulator:
    """Start a simulator; port 0 picks a free port, reported in `.url`.

    With `virtual_clock`, time stands still until `advance()` (or the control endpoint).
    """
    app, state = create_simulator_app(
        account_sid=account_sid,
        auth_token=auth_token,
        clock=VirtualClock() if virtual_clock else None,
        seed=seed,
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    return RunningSimulator(f"http://{url_host}:{bound_port}", state, runner)
