"""The ``escalator`` command: serve, demo, simulate, migrate, check."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from escalator import __version__
from escalator.cli.demo import run_demo
from escalator.cli.running import serve_app
from escalator.cli.simulate import add_simulate_parser, run_simulator
from escalator.errors import EscalatorError
from escalator.logs import configure_logging
from escalator.routing import load_routing
from escalator.settings import Settings, load_settings
from escalator.store.engine import create_engine
from escalator.store.migrate import current_revision, migrate

__all__ = ["main"]


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
    add_simulate_parser(commands)
    commands.add_parser("migrate", help="bring the database schema up to date")
    check = commands.add_parser("check", help="validate a routing file")
    check.add_argument("routing_file", nargs="?", type=Path, default=None)
    return parser


def _serve(settings: Settings) -> int:
    if not settings.api_keys:
        raise EscalatorError(
            "ESCALATOR_API_KEYS is empty: serve will not accept unauthenticated escalations; "
            "set it to one or more comma-separated keys of 16+ characters"
        )
    routing = load_routing(settings.routing_file)
    asyncio.run(serve_app(settings, routing, on_ready=None))
    return 0


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
        asyncio.run(run_simulator(args))
        return 0
    settings = load_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    if args.command == "serve":
        return _serve(settings)
    if args.command == "demo":
        asyncio.run(run_demo(settings, args.simulator_port))
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
