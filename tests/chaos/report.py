"""The run's summary on the terminal, and its report (Markdown and a JSON twin)."""

from __future__ import annotations

import dataclasses
import json
import platform
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.chaos.config import ChaosResult

__all__ = ["combined_line", "summary_lines", "write_report"]

_EVIDENCE = 15


def combined_line(results: list[ChaosResult]) -> str:
    """``lost=N duplicated=N mismatched=N`` over every run."""
    lost = sum(len(r.verdict.lost) for r in results)
    duplicated = sum(len(r.verdict.duplicated) for r in results)
    mismatched = sum(len(r.verdict.mismatched) for r in results)
    return f"lost={lost} duplicated={duplicated} mismatched={mismatched}"


def _postgres_restart(result: ChaosResult) -> str:
    config = result.config
    if config.database != "postgresql":
        return "not applicable (SQLite)"
    if not config.restart_postgres:
        return "not asked for (--no-restart-postgres)"
    restart = result.postgres_restart
    if not restart:
        return "NOT DONE: the load ended before its turn"
    if restart.get("done"):
        return f"done ({restart['detail']}, {restart['seconds']} s)"
    return f"NOT DONE: {restart.get('detail')}"


def summary_lines(result: ChaosResult) -> list[str]:
    """What a reader needs to trust (or chase) the verdict, without the result line."""
    c, v, cl = result.config, result.verdict, result.clients
    alarms = result.service_log.get("alarms", {})
    lines = [
        f"database={c.database} replicas={c.replicas} conversations={c.escalations} seed={c.seed}",
        f"acknowledged={cl.get('acknowledged')} held={cl.get('escalations_held')} "
        f"tasks={sum(v.task_statuses.values())} gave_up={cl.get('gave_up')}",
        f"kills={len(result.kills)} restarts={result.restarts} "
        f"unexpected_exits={len(result.unexpected_exits)}",
        f"postgresql restart: {_postgres_restart(result)}",
        f"client retries={cl.get('retries')} 409s={cl.get('answers_409')} "
        f"replays={cl.get('replays_sent')} answers={cl.get('answers')}",
        f"faults fired: {result.faults_fired}",
        f"event callbacks: {result.callbacks}",
        f"proxy: {result.proxy}",
        f"drain: {result.drain}",
        f"workers put back by the harness's supervisor (offline >= "
        f"{result.supervisor.get('grace_s')} s): {result.supervisor.get('workers_put_back')}",
        f"escalations by status/outcome: {dict(v.escalation_statuses)}",
        f"tasks by status: {dict(v.task_statuses)}",
        f"notes: {dict(v.notes)}",
        f"time to task (s): {cl.get('time_to_task_s')}",
        f"TaskRouter errors the service logged: {result.service_log.get('twilio_errors_seen')}",
        f"timings (s): {result.timings}",
    ]
    if alarms:
        lines.append(f"ALARMS in the service logs: { {k: len(x) for k, x in alarms.items()} }")
    for name, found in (
        ("LOST", v.lost),
        ("DUPLICATED", v.duplicated),
        ("MISMATCHED", v.mismatched),
        ("offline worker put back", result.supervisor.get("evidence", [])),
        ("5xx a replica answered TaskRouter", result.proxy_errors),
    ):
        lines.extend(f"{name}: {item}" for item in found[:_EVIDENCE])
    if result.workdir:
        lines.append(f"logs kept in {result.workdir}")
    return lines


def _as_json(result: ChaosResult) -> dict[str, Any]:
    body = dataclasses.asdict(result)
    body["config"] = {
        k: v for k, v in dataclasses.asdict(result.config).items() if k != "postgres_url"
    }
    body["verdict"] = {
        "line": result.line,
        "lost": result.verdict.lost,
        "duplicated": result.verdict.duplicated,
        "mismatched": result.verdict.mismatched,
        "notes": dict(result.verdict.notes),
        "escalation_statuses": dict(result.verdict.escalation_statuses),
        "task_statuses": dict(result.verdict.task_statuses),
    }
    body["postgres_restart_summary"] = _postgres_restart(result)
    return body


def write_report(results: list[ChaosResult], out_dir: Path, command: str) -> tuple[Path, Path]:
    """``<date>-<host>-chaos.md`` and ``.json`` under ``out_dir``; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.now(UTC):%Y-%m-%d}-{socket.gethostname()}-chaos"
    markdown, twin = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    line = combined_line(results)
    machine = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    text = [
        "# escalator fault suite (chaos)",
        "",
        f"- when: {results[0].started_at if results else '?'} (UTC)",
        f"- host: {socket.gethostname()} ({machine})",
        f"- command: `{command}`",
        f"- result: **`{line}`**",
        "",
        "What each count means, and the task-state → escalation-status mapping: see the",
        "docstring of `tests/chaos/verify.py`. The faults: `tests/chaos/faults.py`.",
    ]
    for result in results:
        text += ["", f"## {result.config.database}: `{result.line}`", "", "```"]
        text += summary_lines(result)
        text += ["```", "", "Kills:", ""]
        text += [f"- {kill}" for kill in result.kills] or ["- none"]
        text += ["", "Faults turned on:", ""]
        text += [f"- {fault}" for fault in result.faults_turned_on]
        if result.unexpected_exits:
            text += ["", "Unexpected exits:", ""]
            text += [f"- `{e[:500]}`" for e in result.unexpected_exits]
        text += ["", "Timeline (TaskRouter's tasks by status, workers offline):", ""]
        text += [
            "| t (s) | requests done | tasks by status | workers offline |",
            "|---|---|---|---|",
        ]
        text += [
            f"| {p['t_s']} | {p['requests_done']} | {p['tasks_by_status']} | "
            f"{p['workers_offline']} |"
            for p in result.timeline[:: max(1, len(result.timeline) // 40)]
        ]
        events = result.service_log.get("events", {})
        text += ["", "Service log events (all replicas, all starts):", "", "```"]
        text += [f"{count:8d}  {name}" for name, count in list(events.items())[:40]]
        text += ["```"]
    text += ["", line, ""]
    markdown.write_text("\n".join(text), encoding="utf-8")
    payload = {
        "command": command,
        "host": socket.gethostname(),
        "result": line,
        "runs": [_as_json(r) for r in results],
    }
    twin.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return markdown, twin
