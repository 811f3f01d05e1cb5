"""Run escalator's benchmark scenarios and write `bench/results/<date>-<host>.md` and `.json`.

    python bench/run.py                 # every scenario (about 15 minutes on 2 cores)
    python bench/run.py --quick         # a short smoke run of every scenario
    python bench/run.py --only ack,drain --runs 1

Each scenario starts its own processes (`escalator serve`, `escalator simulate`, the ceiling and
baseline apps) and drives them from this process over loopback. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import report
from benchlib import (
    REPO_ROOT,
    Context,
    commit_ceiling,
    loadavg,
    machine_context,
    scrub,
)
from processes import (
    postgres_context,
)

Scenario = Callable[[Context], Awaitable[dict[str, Any]]]
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _ack(ctx: Context) -> dict[str, Any]:
    import ack_bench

    return await ack_bench.run(ctx)


async def _baseline(ctx: Context) -> dict[str, Any]:
    import baseline_bench

    return await baseline_bench.run(ctx)


async def _time_to_task(ctx: Context) -> dict[str, Any]:
    import time_to_task_bench

    return await time_to_task_bench.run(ctx)


async def _drain(ctx: Context) -> dict[str, Any]:
    import drain_bench

    return await drain_bench.run(ctx)


async def _events(ctx: Context) -> dict[str, Any]:
    import events_bench

    argv = [
        *("--escalations", str(ctx.pick(600, 150))),
        *("--warmup", str(ctx.pick(100, 30))),
        *("--runs", str(ctx.runs)),
        *("--duplicates", str(ctx.pick(500, 100))),
    ]
    results = {"sqlite": await events_bench.bench(events_bench.parser().parse_args(argv))}
    if ctx.postgres_admin:
        pg = [*argv, "--postgres", ctx.postgres_admin]
        results["postgresql"] = await events_bench.bench(events_bench.parser().parse_args(pg))
    return results


async def _memory(ctx: Context) -> dict[str, Any]:
    import memory_bench

    return await memory_bench.run(ctx)


async def _simulator(ctx: Context) -> dict[str, Any]:
    import simulator_bench

    argv = [
        *("--count", str(ctx.pick(5_000, 1_000))),
        *("--warmup", str(ctx.pick(500, 200))),
        *("--runs", str(ctx.runs)),
        *("--max-seconds", str(ctx.pick(30, 10))),
    ]
    return await simulator_bench.bench(simulator_bench.parser().parse_args(argv))


SCENARIOS: dict[str, Scenario] = {
    "ack": _ack,
    "baseline": _baseline,
    "time-to-task": _time_to_task,
    "drain": _drain,
    "events": _events,
    "memory": _memory,
    "simulator": _simulator,
}


def _git() -> dict[str, Any]:
    """The commit under test and how many files under escalator/ differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(  # noqa: S603 - a fixed git command line
            ["git", *args],  # noqa: S607 - git from PATH
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip()

    status = git("status", "--porcelain", "--", "escalator")
    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "dirty_files": len(status.splitlines()),
    }


def _other_cores(value: Any) -> list[float]:
    """Every `other_cores` figure in a scenario's results: what others took meanwhile."""
    if isinstance(value, dict):
        found = [value["other_cores"]] if isinstance(value.get("other_cores"), float) else []
        return found + [x for v in value.values() for x in _other_cores(v)]
    if isinstance(value, list):
        return [x for v in value for x in _other_cores(v)]
    return []


async def _postgres_available(url: str) -> dict[str, Any] | None:
    try:
        return await postgres_context(url)
    except (OSError, Exception) as exc:  # asyncpg raises its own errors besides OSError
        print(f"PostgreSQL at {url} is not usable ({type(exc).__name__}): skipped", flush=True)
        return None


async def _run_all(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    names = [n.strip() for n in args.only.split(",")] if args.only else list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"--only: unknown scenario(s) {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "quick": args.quick,
        "runs": args.runs,
        "git": _git(),
        "machine": machine_context(workdir),
        "scenarios": {},
    }
    results["machine"]["sqlite_commit_ceiling_per_second"] = commit_ceiling(workdir)
    postgres = await _postgres_available(args.postgres) if args.postgres else None
    results["machine"]["postgresql"] = postgres
    connector = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        ctx = Context(
            workdir=workdir,
            http=http,
            quick=args.quick,
            runs=args.runs,
            postgres_admin=args.postgres if postgres else None,
            log=lambda line: print(line, flush=True),
            py_spy=args.py_spy or None,
        )
        for name in names:
            print(f"== {name}", flush=True)
            started, load = time.monotonic(), loadavg()
            entry: dict[str, Any] = {"loadavg_before": load}
            try:
                entry["results"] = await SCENARIOS[name](ctx)
            except Exception as exc:
                traceback.print_exc()
                entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["seconds"] = round(time.monotonic() - started, 1)
            entry["other_cores"] = _other_cores(entry.get("results"))
            entry["loadavg_after"] = loadavg()
            results["scenarios"][name] = entry
            print(f"== {name}: {entry['seconds']} s", flush=True)
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def _relative(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def main() -> int:
    """Run the scenarios; write the results (JSON and Markdown) and print where."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run of each scenario")
    parser.add_argument("--only", help="comma-separated scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--runs", type=int, help="repeats per measurement (default 3, quick 1)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="PostgreSQL server to create (and drop) benchmark databases on; '' to skip",
    )
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument(
        "--py-spy",
        default=os.environ.get("BENCH_PY_SPY") or shutil.which("py-spy"),
        help="py-spy binary: profile escalator during scenario 1 (default: BENCH_PY_SPY, PATH)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    args.runs = args.runs or (1 if args.quick else 3)
    workdir = Path(tempfile.mkdtemp(prefix="escalator-bench-"))
    try:
        results = asyncio.run(_run_all(args, workdir))
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results = scrub(
        results, {str(workdir): "<tmp>", str(REPO_ROOT): "<repo>", str(Path.home()): "~"}
    )
    stem = f"{datetime.now().strftime('%Y-%m-%d')}-{results['host']}"
    if args.quick:
        stem += "-quick"
    if args.only:
        stem += "-" + args.only.replace(",", "-")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.out_dir / f"{stem}.json"
    md_path = args.out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(report.render(results))
    print(f"wrote {_relative(md_path)} and {json_path.name}")
    return 1 if any("error" in s for s in results["scenarios"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
