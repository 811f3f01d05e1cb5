"""What one escalation costs the database: statements, commits, pool checkouts, new connections.

A diagnostic beside the benchmarks (not run by `make bench`): `escalator serve` runs under a
wrapper (this script with `--serve`) that counts, through SQLAlchemy's public event API, every
statement (by verb and table), commit, pool checkout and new DBAPI connection, in every engine
of the process (what the pool runs itself, such as pre-ping, is not seen). This process sends
`--escalations` at `--concurrency`, waits until every task is created and prints the counts
per escalation (the service writes them on SIGUSR1; startup's own are subtracted).

    .venv/bin/python bench/sql_counts.py                       # SQLite
    .venv/bin/python bench/sql_counts.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from load import (
    closed_loop,
    encoded_bodies,
    post_escalation,
)
from processes import (
    free_port,
    postgres_database,
    start_service,
    start_simulator,
    stop,
    until_drained,
    until_ready,
)

_OUT = "BENCH_SQL_COUNTS_OUT"
_SCRIPT = Path(__file__).resolve()


def _kind(statement: str) -> str:
    """`SELECT FROM escalations`, `INSERT INTO outbox`, `BEGIN IMMEDIATE`..."""
    text = " ".join(statement.split())
    if match := re.match(r"(SELECT)\b.*?\bFROM (\S+)", text, re.IGNORECASE):
        return f"{match.group(1)} FROM {match.group(2)}"
    if match := re.match(r"(INSERT INTO|UPDATE|DELETE FROM) (\S+)", text, re.IGNORECASE):
        return f"{match.group(1)} {match.group(2)}"
    return " ".join(text.split()[:2])


def _serve() -> int:
    """Count, then run `escalator serve`; write the counts as JSON at exit."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    counts: Counter[str] = Counter()

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        counts[_kind(statement)] += 1

    @event.listens_for(Engine, "commit")
    def _commit(conn: Any) -> None:
        counts["<commit>"] += 1

    @event.listens_for(Pool, "checkout")
    def _checkout(*args: Any) -> None:
        counts["<pool checkout>"] += 1

    @event.listens_for(Pool, "connect")
    def _connect(*args: Any) -> None:
        counts["<new connection>"] += 1

    def dump(*_: Any) -> None:
        Path(os.environ[_OUT]).write_text(json.dumps(dict(counts)))

    # SIGUSR1: write the counts so far (escalator does not use that signal).
    signal.signal(signal.SIGUSR1, dump)
    from escalator.cli import main

    return main(["serve"])


def _snapshot(service: Any, out: Path) -> Counter[str]:
    """The wrapped service's counts so far (it writes them on SIGUSR1)."""
    out.unlink(missing_ok=True)
    service.send_signal(signal.SIGUSR1)
    for _ in range(100):
        if out.exists() and out.stat().st_size:
            return Counter(json.loads(out.read_text()))
        time.sleep(0.05)
    raise RuntimeError("the service did not write its counts")


async def _count(args: argparse.Namespace, workdir: Path, database_url: str | None) -> Counter[str]:
    out = workdir / "counts.json"
    os.environ[_OUT] = str(out)
    simulator = start_simulator(workdir)
    port = free_port()
    service = start_service(
        workdir,
        simulator,
        port,
        database_url=database_url,
        command=(str(_SCRIPT), "--serve"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await until_ready(http, base, service)
            # What starting cost (migrations, the first checks) is not the escalations'.
            before = await asyncio.to_thread(_snapshot, service, out)
            bodies = encoded_bodies("count", args.escalations)

            async def send(n: int) -> tuple[str, str | None]:
                return await post_escalation(http, f"{base}/escalations", bodies[n])

            load = await closed_loop(
                send, concurrency=args.concurrency, seconds=300, count=args.escalations
            )
            await until_drained(http, base, within=300)
            after = await asyncio.to_thread(_snapshot, service, out)
            print(f"{len(load.ok())} escalations acknowledged, every task created", flush=True)
    finally:
        stop(service)
        stop(simulator.process)
    after.subtract(before)
    return after


async def _main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="escalator-sql-counts-"))
    try:
        if args.postgres:
            async with postgres_database(args.postgres) as url:
                counts = await _count(args, workdir, url)
        else:
            counts = await _count(args, workdir, None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"per escalation, at concurrency {args.concurrency}:")
    for name, value in counts.most_common():
        if value > 0:
            print(f"  {value / args.escalations:6.2f}  {name}")


def main() -> int:
    """Serve under the counters, or drive and print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--escalations", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="on a fresh PostgreSQL database")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return _serve()
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
