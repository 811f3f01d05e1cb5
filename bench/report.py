"""The combined results as Markdown: context, targets, one section per scenario.

bench/run.py writes both files; to render the Markdown again from the JSON, with a written
analysis of what limits the missed targets (kept in the JSON too):

    python bench/report.py bench/results/2026-01-01-host.json --analysis notes.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from formatting import number, table
from sections import SECTIONS
from targets import targets

__all__ = ["render"]


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def _context(results: dict[str, Any]) -> list[str]:
    machine = results["machine"]
    sqlite, pg = machine["sqlite"], machine.get("postgresql")
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    git = results.get("git") or {}
    lines = [
        f"- Run: {'quick (smoke, not for comparison)' if results['quick'] else 'full'},"
        f" {results['runs']} run(s) per measurement, {results['started_at']} to"
        f" {results['finished_at']} (UTC)",
        f"- Code: commit {git.get('commit', '?')}; uncommitted changes in"
        f" {git.get('dirty_files', '?')} file(s) under escalator/ at the start",
        f"- CPU: {machine['cpu_model']}, {machine['cpu_count']} cores; memory"
        f" {machine['memory_total']}; kernel {machine['kernel']}",
        f"- Python {machine['python']} ({machine['implementation']}); {packages}",
        f"- SQLite {sqlite['version']}, journal_mode={sqlite['journal_mode']},"
        f" synchronous={sqlite['synchronous']}, on {sqlite['filesystem']}; one small INSERT per"
        f" transaction in a loop: {number(machine.get('sqlite_commit_ceiling_per_second'), 0)}"
        " commits/s (the disk's fsync rate)",
    ]
    if pg:
        lines.append(
            f"- PostgreSQL {pg['version']}: synchronous_commit={pg['synchronous_commit']},"
            f" fsync={pg['fsync']}, wal_sync_method={pg['wal_sync_method']},"
            f" full_page_writes={pg['full_page_writes']}, commit_delay={pg['commit_delay']},"
            f" shared_buffers={pg['shared_buffers']}, max_connections={pg['max_connections']}"
            " (server defaults)"
        )
    else:
        lines.append("- PostgreSQL: not available in this run")
    lines.append(f"- Load average at the start: {machine['loadavg_at_start']}")
    if pg:
        lines.append(
            f"- PostgreSQL client connections in use by others at the start:"
            f" {pg.get('connections_in_use', '?')} of {pg['max_connections']}"
        )
    return [*lines, ""]


def _noise(results: dict[str, Any]) -> list[str]:
    rows = []
    for name, entry in results["scenarios"].items():
        others = entry.get("other_cores")
        rows.append(
            (
                name,
                number(entry.get("seconds"), 0),
                " / ".join(number(v, 2) for v in entry.get("loadavg_before", [])[:1])
                + " -> "
                + " / ".join(number(v, 2) for v in entry.get("loadavg_after", [])[:1]),
                "n/a" if not others else f"{number(min(others), 2)} .. {number(max(others), 2)}",
                "error: " + entry["error"] if "error" in entry else "ok",
            )
        )
    return table(
        ("scenario", "seconds", "load avg 1 min (before -> after)", "other processes' cores", ""),
        rows,
    )


def render(results: dict[str, Any]) -> str:
    """The results file."""
    date = results["started_at"][:10]
    lines = [f"# escalator benchmarks: {date}, {results['host']}", ""]
    lines += [
        "Produced by `make bench` (bench/run.py); the JSON twin has every run's figures."
        " Read bench/README.md for what each scenario does. The machine is shared: the"
        " 'other processes' figures say how much CPU others took while we measured.",
        "",
        "## Context",
        "",
        *_context(results),
        "## Targets",
        "",
    ]
    lines += table(
        ("target", "measured", "verdict"), ((t, m, _verdict(ok)) for t, m, ok in targets(results))
    )
    lines += ["## Noise", "", *_noise(results)]
    for name, title, section in SECTIONS:
        entry = results["scenarios"].get(name)
        if entry is None:
            continue
        lines += [f"## {title}", ""]
        if "error" in entry:
            lines += [f"Failed: `{entry['error']}`", ""]
            continue
        lines += section(entry["results"])
    if results.get("analysis"):
        lines += ["## What limits the missed targets", "", results["analysis"], ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    """Render RESULTS.json's Markdown twin again, optionally with an analysis."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a JSON file bench/run.py wrote")
    parser.add_argument("--analysis", type=Path, help="Markdown: what limits missed targets")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    if args.analysis:
        results["analysis"] = args.analysis.read_text().strip()
        args.results.write_text(json.dumps(results, indent=2) + "\n")
    args.results.with_suffix(".md").write_text(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
