"""The fault suite from the command line; ``make chaos`` runs it at full size.

    python -m tests.chaos.run --database both --escalations 2000 --kills 20 --replicas 3 \\
        --restart-postgres --out-dir bench/results

Prints a summary per database, then, as its last line, ``lost=N duplicated=N mismatched=N``
(summed over the databases). Exit status 0 only when all three are 0.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository root importable (``tests.chaos...``).
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.chaos.config import ChaosConfig, ChaosResult
from tests.chaos.harness import run_chaos
from tests.chaos.report import combined_line, summary_lines, write_report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tests/chaos/run.py",
        description="escalator's fault suite: replicas killed, TaskRouter failing, agents "
        "retrying; then every acknowledged escalation must have exactly one matching task.",
    )
    parser.add_argument(
        "--database",
        choices=("postgresql", "sqlite", "both"),
        default="postgresql",
        help="both: PostgreSQL with --replicas, then SQLite with one process",
    )
    parser.add_argument("--escalations", type=int, default=150, help="conversations escalated")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs (per database)")
    parser.add_argument("--replicas", type=int, default=2, help="serve processes on PostgreSQL")
    parser.add_argument(
        "--restart-postgres",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="restart the PostgreSQL server once, mid-load (needs the rights; says so if not)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    parser.add_argument("--rate", type=float, default=10.0, help="requests started per second")
    parser.add_argument("--concurrency", type=int, default=32, help="agents at once")
    parser.add_argument("--drain-timeout", type=float, default=180.0, help="seconds")
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="write <date>-<host>-chaos.md/.json here"
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs even when it passes")
    return parser


async def _main(args: argparse.Namespace) -> list[ChaosResult]:
    databases = ["postgresql", "sqlite"] if args.database == "both" else [args.database]
    results = []
    for database in databases:
        config = ChaosConfig(
            database=database,
            escalations=args.escalations,
            replicas=args.replicas if database == "postgresql" else 1,
            kills=args.kills,
            restart_postgres=args.restart_postgres and database == "postgresql",
            seed=args.seed,
            rate=args.rate,
            concurrency=args.concurrency,
            drain_timeout=args.drain_timeout,
            keep_workdir=args.keep,
        )
        result = await run_chaos(config)
        print(f"--- {database}: {result.line}", flush=True)
        for line in summary_lines(result):
            print(f"    {line}", flush=True)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run, report, and print the result line last."""
    args = _parser().parse_args(argv)
    results = asyncio.run(_main(args))
    if args.out_dir is not None:
        command = "python -m tests.chaos.run " + shlex.join(argv or sys.argv[1:])
        markdown, twin = write_report(results, args.out_dir, command)
        print(f"report: {markdown} and {twin.name}")
    for result in results:
        restart = result.postgres_restart
        if result.config.restart_postgres and not restart.get("done"):
            print(
                "WARNING: the PostgreSQL restart this run asked for was NOT done: "
                f"{restart.get('detail', 'the load ended before its turn')}"
            )
    line = combined_line(results)
    print(line, flush=True)
    return 0 if line == "lost=0 duplicated=0 mismatched=0" else 1


if __name__ == "__main__":
    sys.exit(main())
