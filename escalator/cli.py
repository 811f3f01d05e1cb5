"""The ``escalator`` command: serve, demo, simulate, migrate, check."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import NoReturn

from aiohttp import web
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from escalator import __version__
from escalator.api import create_app
from escalator.errors import EscalatorError
from escalator.logs import configure_logging, get_logger
from escalator.routing import RoutingTable, load_routing
from escalator.settings import Settings, load_settings
from escalator.simulator import RunningSimulator, start_simulator
from escalator.store.engine import create_engine
from escalator.store.migrate import current_revision, migrate
from escalator.taskrouter.provision import ProvisionedWorkspace, provision_workspace

__all__ = ["main"]

_log = get_logger(__name__)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Bad usage: one line, exit status 2."""
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="escalator", description="Hand AI conversations to humans via TaskRouter."
    )
    parser.add_argument("--version", action="version", version=f"escalator {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser("serve", help="run the service (configured from the environment)")
    demo = commands.add_parser("demo", help="the service on SQLite with the simulator in-process")
    demo.add_argument("--simulator-port", type=int, default=0, help="default: a free port")
    simulate = commands.add_parser("simulate", help="run the TaskRouter simulator alone")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8090)
    simulate.add_argument("--account-sid", default=None, help="default: a generated AC… SID")
    simulate.add_argument("--auth-token", default=None, help="default: a generated token")
    simulate.add_argument(
        "--seed",
        type=Path,
        metavar="ROUTING_FILE",
        help="create the workspace this routing file describes",
    )
    commands.add_parser("migrate", help="bring the database schema up to date")
    check = commands.add_parser("check", help="validate a routing file")
    check.add_argument("routing_file", nargs="?", type=Path, default=None)
    return parser


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _serve_app(
    settings: Settings, routing: RoutingTable, *, on_ready: Callable[[], Awaitable[None]] | None
) -> None:
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
        await _until_signalled()
        _log.info("service.stopping")
    finally:
        await runner.cleanup()


def _serve(settings: Settings) -> int:
    if not settings.api_keys:
        raise EscalatorError(
            "ESCALATOR_API_KEYS is empty: serve will not accept unauthenticated escalations; "
            "set it to one or more comma-separated keys of 16+ characters"
        )
    routing = load_routing(settings.routing_file)
    asyncio.run(_serve_app(settings, routing, on_ready=None))
    return 0


async def _start_simulator(
    host: str, port: int, account_sid: str, auth_token: str
) -> RunningSimulator:
    try:
        return await start_simulator(
            host=host, port=port, account_sid=account_sid, auth_token=auth_token
        )
    except OSError as exc:
        raise EscalatorError(
            f"cannot start the simulator on {host}:{port}: {exc.strerror}"
        ) from None


async def _provision_simulator(
    simulator: RunningSimulator, account_sid: str, auth_token: str, routing: RoutingTable
) -> ProvisionedWorkspace:
    async with AsyncTwilioHttpClient() as http:
        client = Client(account_sid, auth_token, http_client=http, environment={})
        client.taskrouter.base_url = simulator.url
        return await provision_workspace(client, routing.file.workspace)


def _demo_banner(
    settings: Settings, api_key: str, simulator: RunningSimulator, workspace: ProvisionedWorkspace
) -> str:
    base = settings.effective_public_url
    conversation = f"demo-{secrets.token_hex(4)}"
    body = (
        f'{{"conversation_id":"{conversation}","reason_code":"billing_dispute",'
        '"summary":"Customer disputes a $42 charge on the March invoice and asked for a person.",'
        '"channel":"chat","customer":{"name":"Ada","language":"en"}}'
    )
    auth = f'-H "Authorization: Bearer {api_key}"'
    return f"""
escalator demo is running
  API        {base}   (SQLite: {settings.database_url.removeprefix("sqlite:///")})
  TaskRouter simulator {simulator.url}  workspace {workspace.workspace_sid}
  API key    {api_key}

Escalate a conversation, then read it back (paste both lines):

  ID=$(curl -sS -X POST {base}/escalations {auth} -H "Content-Type: application/json" \\
    -d '{body}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  curl -sS {base}/escalations/$ID {auth}

Press Ctrl-C to stop.
"""


async def _run_demo(settings: Settings, simulator_port: int) -> None:
    routing = load_routing(settings.routing_file)
    account_sid = f"AC{secrets.token_hex(16)}"
    auth_token = secrets.token_hex(16)
    simulator = await _start_simulator(settings.host, simulator_port, account_sid, auth_token)
    try:
        workspace = await _provision_simulator(simulator, account_sid, auth_token, routing)
        api_key = (
            settings.api_keys[0].get_secret_value()
            if settings.api_keys
            else secrets.token_urlsafe(24)
        )
        demo_settings = load_settings(
            None,
            **{
                **settings.model_dump(exclude_unset=True),
                "api_keys": api_key if not settings.api_keys else settings.api_keys,
                "twilio_account_sid": account_sid,
                "twilio_auth_token": auth_token,
                "workspace_sid": workspace.workspace_sid,
                "workflow_sid": workspace.workflow_sid,
                "taskrouter_url": simulator.url,
            },
        )

        async def announce() -> None:
            print(_demo_banner(demo_settings, api_key, simulator, workspace), flush=True)

        await _serve_app(demo_settings, routing, on_ready=announce)
    finally:
        await simulator.close()


async def _run_simulator(args: argparse.Namespace) -> None:
    account_sid = args.account_sid or f"AC{secrets.token_hex(16)}"
    auth_token = args.auth_token or secrets.token_hex(16)
    routing = load_routing(args.seed) if args.seed else None
    simulator = await _start_simulator(args.host, args.port, account_sid, auth_token)
    try:
        print(f"TaskRouter simulator at {simulator.url}  (account {account_sid})", flush=True)
        if not args.auth_token:
            print(f"auth token: {auth_token}", flush=True)
        if routing is not None:
            seeded = await _provision_simulator(simulator, account_sid, auth_token, routing)
            print(f"ESCALATOR_WORKSPACE_SID={seeded.workspace_sid}")
            print(f"ESCALATOR_WORKFLOW_SID={seeded.workflow_sid}")
            for kind, sids in (("queue", seeded.task_queues), ("worker", seeded.workers)):
                for name, sid in sids.items():
                    print(f"{kind} {name}: {sid}")
            sys.stdout.flush()
        await _until_signalled()
    finally:
        await simulator.close()


async def _migrate(settings: Settings) -> str | None:
    engine = create_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        await migrate(engine)
        return await current_revision(engine)
    finally:
        await engine.dispose()


def _run(args: argparse.Namespace) -> int:
    if args.command == "check":
        table = load_routing(args.routing_file)
        print(
            f"{args.routing_file or 'bundled routing.yaml'}: ok "
            f"({len(table.file.reasons)} reason codes, {len(table.file.departments)} departments)"
        )
        return 0
    if args.command == "simulate":
        configure_logging()
        asyncio.run(_run_simulator(args))
        return 0
    settings = load_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    if args.command == "serve":
        return _serve(settings)
    if args.command == "demo":
        asyncio.run(_run_demo(settings, args.simulator_port))
        return 0
    if args.command == "migrate":
        revision = asyncio.run(_migrate(settings))
        print(f"database schema at revision {revision}")
        return 0
    raise AssertionError(f"unknown command {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: bad input gives one readable line and a non-zero exit, never a traceback."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except EscalatorError as exc:
        print(f"escalator: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
