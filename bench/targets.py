"""The targets of issue 7, each beside what the run measured."""

from __future__ import annotations

from typing import Any

from formatting import number

__all__ = ["scenario_results", "targets"]

Target = tuple[str, str, bool | None]


def scenario_results(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A scenario's results, or None when the run did not measure it (or it failed)."""
    entry = results["scenarios"].get(name)
    return entry.get("results") if entry else None


def _ack_targets(ack: dict[str, Any]) -> list[Target]:
    rows: list[Target] = []
    systems, ratios = ack["systems"], ack["ratios"]
    if sqlite := systems.get("escalator-sqlite"):
        p99 = sqlite["latency_p99_ms"]
        rows.append(
            (
                "ack p99 < 10 ms at 200/s on SQLite",
                f"p99 {number(p99, 1, ' ms')} (p50 {number(sqlite['latency_p50_ms'], 1, ' ms')})",
                p99 is not None and p99 < 10,
            )
        )
    for db, label in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
        ratio = ratios.get(f"escalator-{db} / ceiling-{db}")
        if ratio is None:
            continue
        value = ratio["median"]
        esc = systems[f"escalator-{db}"]["throughput_per_second"]
        ceiling = systems[f"ceiling-{db}"]["throughput_per_second"]
        measured = f"{number(100 * value, 0, '%')} ({number(esc, 0)}/s vs {number(ceiling, 0)}/s)"
        rows.append((f"escalator >= 60% of the ceiling, {label}", measured, value >= 0.6))
        if db == "sqlite":
            rows.append(
                ("stretch: >= 100% of the per-request SQLite ceiling", measured, value >= 1.0)
            )
    return rows


def _time_to_task_targets(ttt: dict[str, Any]) -> list[Target]:
    rows: list[Target] = []
    for db in ("sqlite", "postgresql"):
        for rate, figures in (ttt.get(db) or {}).items():
            overhead = figures["overhead_p50_ms"]
            rows.append(
                (
                    f"time-to-task overhead p50 < 5 ms, {db}, {rate}/s",
                    f"{number(overhead, 1, ' ms')} (time to task p50"
                    f" {number(figures['time_to_task_p50_ms'], 1, ' ms')}, p99"
                    f" {number(figures['time_to_task_p99_ms'], 1, ' ms')})",
                    overhead is not None and overhead < 5,
                )
            )
    return rows


def _drain_targets(drain: dict[str, Any]) -> list[Target]:
    fraction = drain["achieved_fraction"]
    return [
        (
            "drain >= 95% of the rate limit, 0 lost",
            f"{number(100 * (fraction or 0), 0, '%')} of"
            f" {number(drain['config']['limit_per_second'], 0)}/s, {drain['lost']} lost,"
            f" {drain['duplicated']} duplicated",
            fraction is not None and fraction >= 0.95 and drain["lost"] == 0,
        )
    ]


def _events_targets(events: dict[str, Any]) -> list[Target]:
    rows: list[Target] = []
    for db, run in events.items():
        summary = run["summary"]
        rate = summary["events_per_second"]
        rows.append(
            (
                f">= 2,000 events/s ingested ({db})" + ("" if db == "sqlite" else ", context only"),
                f"{number(rate, 0)}/s, {summary['errors']} errors",
                (rate >= 2000 and not summary["errors"]) if db == "sqlite" else None,
            )
        )
    return rows


def _memory_targets(memory: dict[str, Any]) -> list[Target]:
    rows: list[Target] = []
    for db, figures in memory.items():
        if db == "imports":
            continue
        rss = figures["loaded_mib"].get("VmRSS")
        rows.append(
            (
                f"RSS < 120 MiB with {figures['open_escalations']:,} open escalations ({db})",
                f"{number(rss, 1, ' MiB')}"
                f" (idle {number(figures['idle_mib'].get('VmRSS'), 1)} MiB)",
                rss is not None and rss < 120 and figures["open_escalations"] >= 10_000,
            )
        )
    return rows


def _simulator_targets(simulator: dict[str, Any]) -> list[Target]:
    rate = simulator["summary"]["creations_per_second"]
    return [
        (
            "simulator >= 1,000 creations/s (never the bottleneck)",
            f"{number(rate, 0)}/s",
            bool(simulator["meets_goal"]),
        )
    ]


_TARGETS = (
    ("ack", _ack_targets),
    ("time-to-task", _time_to_task_targets),
    ("drain", _drain_targets),
    ("events", _events_targets),
    ("memory", _memory_targets),
    ("simulator", _simulator_targets),
)


def targets(results: dict[str, Any]) -> list[Target]:
    """(target, measured, met) for each target of issue 7 that the run measured."""
    rows: list[Target] = []
    for name, of in _TARGETS:
        if scenario := scenario_results(results, name):
            rows += of(scenario)
    return rows
