"""One Markdown section per scenario of the results file."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from formatting import number, table

__all__ = ["SECTIONS"]


def _ack(ack: dict[str, Any]) -> list[str]:
    config = ack["config"]
    lines = [
        f"Throughput: closed loop, {config['concurrency']} requests in flight for"
        f" {config['seconds_per_phase']} s. Latency: open loop at {config['rate_per_second']:.0f}"
        " requests/s, measured from each request's scheduled send time. Medians of"
        f" {config['runs']} run(s); every system measured in each run, one after the other.",
        "",
    ]
    rows = []
    for name, s in ack["systems"].items():
        sim = s.get("simulator_cpu_ms_per_request")
        total = s.get("total_cpu_ms_per_escalation")
        rows.append(
            (
                name,
                number(s["throughput_per_second"], 0),
                number(s["throughput_p50_ms"]),
                number(s["throughput_p99_ms"]),
                number(s["latency_p50_ms"]),
                number(s["latency_p99_ms"]),
                number(s["latency_max_ms"]),
                s["errors"],
                number(s["cpu_ms_per_request"], 2) + (f" (+{number(sim, 2)} sim)" if sim else ""),
                number(total, 2) if total else "",
                number(s["service_cores"], 2),
                number(s["driver_cores"], 2),
                number(s["other_cores"], 2),
            )
        )
    lines += table(
        (
            "system",
            "req/s @32",
            "p50 ms @32",
            "p99 ms @32",
            "p50 ms @200/s",
            "p99 ms @200/s",
            "max ms @200/s",
            "errors",
            "CPU ms/req",
            "CPU ms/esc. with dispatch",
            "cores",
            "driver cores",
            "others' cores",
        ),
        rows,
    )
    lines.append(
        "CPU ms/req: the service process's CPU time per acknowledged request in the"
        " throughput phase (for escalator, its dispatcher works meanwhile too; `sim` is the"
        " simulator's CPU for those creates). CPU ms/esc. with dispatch: escalator's CPU over"
        " the phase and the drain after it (every task created), per escalation. Cores: what"
        " the service, the driver and other processes used during the phase (2 cores in all)."
    )
    lines.append("")
    lines += table(
        ("same-run ratio", "per run", "median"),
        (
            (name, ", ".join(number(v, 3) for v in r["per_run"]), number(r["median"], 3))
            for name, r in ack["ratios"].items()
        ),
    )
    drains = {
        name: [r[name]["throughput"].get("drain_s") for r in ack["runs"]]
        for name in ack["systems"]
        if name.startswith("escalator")
    }
    for name, values in drains.items():
        lines.append(
            f"- {name}: after each throughput phase its outbox took {values} s to drain"
            " (the dispatcher creating the tasks acknowledged during the phase)."
        )
    if pg := ack.get("postgres"):
        lines.append(
            f"- PostgreSQL client connections in use before the scenario's own:"
            f" {pg.get('connections_in_use', '?')} of max_connections {pg['max_connections']}"
            f" (the ceiling holds {ack['config']['postgres_ceiling_pool']}, escalator up to 20)."
        )
    errors = {
        name: [
            dict(Counter(r[name]["throughput"]["errors"]) + Counter(r[name]["latency"]["errors"]))
            for r in ack["runs"]
        ]
        for name in ack["systems"]
    }
    for name, per_run in errors.items():
        if any(per_run):
            lines.append(f"- {name}: errors by status, per run: {per_run}.")
    for name, memory in ack.get("memory_mib", {}).items():
        lines.append(
            f"- {name}: peak RSS (VmHWM) over the scenario {number(memory.get('VmHWM'))} MiB,"
            f" at the end {number(memory.get('VmRSS'))} MiB."
        )
    if ack.get("profile"):
        lines += ["", *_profile(ack["profile"])]
    return [*lines, ""]


def _profile(profiles: dict[str, Any]) -> list[str]:
    lines = []
    for name, profile in profiles.items():
        threads = ", ".join(f"{k} {number(100 * v, 0, '%')}" for k, v in profile["threads"].items())
        lines.append(
            f"py-spy of {name}: {profile['seconds']} s at concurrency {profile['concurrency']}"
            f" ({profile['per_second']:.0f} req/s while profiled), {profile['samples']} samples"
            f" of the {profile.get('mode', 'active threads')} ({threads}). Inclusive and self"
            " shares of the samples:"
        )
        lines.append("")
        inclusive, own = profile["inclusive"], profile["self"]
        rows = []
        for index in range(max(len(inclusive), len(own))):
            row = []
            for column in (inclusive, own):
                if index < len(column):
                    frame, share = column[index]
                    row += [number(100 * share, 1, "%"), f"`{frame}`"]
                else:
                    row += ["", ""]
            rows.append(row)
        lines += table(("incl.", "frame", "self", "frame"), rows)
    return lines


def _baseline(baseline: dict[str, Any]) -> list[str]:
    config = baseline["config"]
    lines = [
        f"Simulator: +{int(1000 * config['added_latency_s'])} ms on every task creation."
        f" Offered {config['rate_per_second']:.0f} escalations/s, open loop;"
        f" {config['runs']} run(s) of {config['seconds_per_latency_run']} s; the baseline runs"
        f" the sync SDK in {config['baseline_threads']} threads.",
        "",
    ]
    lines += table(
        ("ack latency", "p50 ms", "p99 ms", "max ms", "errors"),
        (
            (name, number(r["p50_ms"]), number(r["p99_ms"]), number(r["max_ms"]), r["errors"])
            for name, r in baseline["latency"].items()
        ),
    )
    esc, base = baseline["latency"].get("escalator"), baseline["latency"].get("baseline")
    if esc and base and esc["p50_ms"]:
        lines.append(
            f"Baseline / escalator ack latency: p50 x{base['p50_ms'] / esc['p50_ms']:.1f},"
            f" p99 x{base['p99_ms'] / max(esc['p99_ms'], 0.001):.1f}."
        )
        lines.append("")
    lines.append(
        f"Faults: {config['escalations_per_fault_mode']} escalations per mode and system, the"
        " caller retrying a failed request twice (after "
        + " s and ".join(str(d) for d in config["caller_retry_delays_s"])
        + " s). Tasks counted through the twilio SDK after escalator's outbox drained."
        " 'Failed 1st try' is what a caller that does not retry would have lost (or, for lost"
        " answers, believed lost)."
    )
    lines.append("")
    rows = []
    for mode, systems in baseline["faults"].items():
        for name, r in systems.items():
            rows.append(
                (
                    mode,
                    name,
                    r["escalations"],
                    r["first_attempt_failed"],
                    r["caller_told_failure"],
                    r["lost"],
                    r["acked_but_lost"],
                    r["duplicated"],
                    r["extra_tasks"],
                    r["failed_but_task_exists"],
                )
            )
    lines += table(
        (
            "fault",
            "system",
            "sent",
            "failed 1st try",
            "failed after retries",
            "lost (0 tasks)",
            "acked but lost",
            "duplicated",
            "extra tasks",
            "told failed, task exists",
        ),
        rows,
    )
    return lines


def _time_to_task(ttt: dict[str, Any]) -> list[str]:
    lines = [
        "From the 201's arrival at the driver to the simulator's `task.created` event"
        " (`event_date_ms`, read through the twilio SDK; 1 ms resolution, truncated, so a"
        " figure may read up to 1 ms low). 'Simulator alone': the driver creating tasks"
        " directly at the same rate, send to `task.created`. Overhead = escalator p50 -"
        f" simulator p50, per run, median of {ttt['config']['runs']} run(s).",
        "",
    ]
    rows = []
    for db in ("sqlite", "postgresql"):
        for rate, f in (ttt.get(db) or {}).items():
            rows.append(
                (
                    db,
                    rate,
                    number(f["time_to_task_p50_ms"]),
                    number(f["time_to_task_p99_ms"]),
                    number(f["simulator_p50_ms"]),
                    number(f["simulator_p99_ms"]),
                    number(f["overhead_p50_ms"]),
                    number(f.get("ack_p50_ms")),
                    number(f["ack_p99_ms"]),
                    f["without_task"],
                )
            )
    lines += table(
        (
            "database",
            "escalations/s",
            "time to task p50 ms",
            "p99 ms",
            "simulator alone p50 ms",
            "p99 ms",
            "overhead p50 ms",
            "ack p50 ms",
            "ack p99 ms",
            "acked without task",
        ),
        rows,
    )
    return lines


def _drain(drain: dict[str, Any]) -> list[str]:
    config = drain["config"]
    lines = [
        f"Limit {config['limit_per_second']:.0f} requests/s per workspace (token bucket, burst"
        f" {config['burst']:.0f}), 429 without Retry-After; backlog {config['backlog']:,}"
        " escalations POSTed as fast as escalator takes them. Achieved rate = (tasks - burst)"
        " / (last creation - first creation): what a token bucket allows beyond its burst.",
        "",
    ]
    rows = []
    for index, r in enumerate(drain["runs"], 1):
        counters = r["escalator_counters"]
        rejects = sum(v for k, v in counters.items() if "429" in k and "failures" in k)
        rows.append(
            (
                index,
                r["acked"],
                number(r["post_seconds"], 2),
                number(r["drain_seconds"], 1),
                number(r["achieved_per_second"]),
                number(100 * r["achieved_fraction"], 0, "%"),
                number(r["overall_per_second"]),
                r["lost"],
                r["duplicated"],
                number(rejects, 0),
                "yes" if r["drained"] else "NO",
            )
        )
    unlimited = drain.get("unlimited")
    if unlimited:
        rows.append(
            (
                "no limit",
                unlimited["acked"],
                number(unlimited["post_seconds"], 2),
                number(unlimited["drain_seconds"], 1),
                number(unlimited["achieved_per_second"]),
                "",
                number(unlimited["overall_per_second"]),
                unlimited["lost"],
                unlimited["duplicated"],
                "",
                "yes" if unlimited["drained"] else "NO",
            )
        )
    lines += table(
        (
            "run",
            "acked",
            "POST s",
            "first to last task s",
            "achieved /s",
            "of limit",
            "overall /s",
            "lost",
            "duplicated",
            "429s seen",
            "drained",
        ),
        rows,
    )
    return lines


def _events(events: dict[str, Any]) -> list[str]:
    rows = []
    for db, run in events.items():
        s, dup = run["summary"], run.get("duplicates_summary") or {}
        rows.append(
            (
                db,
                number(s["events_per_second"], 0),
                number(s["p50_ms"]),
                number(s["p99_ms"]),
                s["errors"],
                number(s["service_cpu_ms_per_event"], 2),
                number(dup.get("events_per_second"), 0),
                number(s["other_cores"], 2),
            )
        )
    config = next(iter(events.values()))["config"]
    lines = [
        f"bench/events_bench.py: {config['escalations']} escalations per run, 5 signed"
        f" callbacks each, concurrency {config['concurrency']}, {config['runs']} run(s)"
        " (median). See bench/README.md for what each callback carries.",
        "",
    ]
    return lines + table(
        (
            "database",
            "events/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "service CPU ms/event",
            "duplicates/s",
            "others' cores",
        ),
        rows,
    )


def _change(figures: dict[str, Any], name: str) -> str:
    return f"{number(figures['idle_mib'].get(name))} -> {number(figures['loaded_mib'].get(name))}"


def _memory(memory: dict[str, Any]) -> list[str]:
    rows = []
    for db, m in memory.items():
        if db == "imports":
            continue
        rows.append(
            (
                db,
                number(m["idle_mib"].get("VmRSS")),
                number(m["after_100_mib"].get("VmRSS")),
                f"{m['open_escalations']:,}",
                number(m["loaded_mib"].get("VmRSS")),
                number(m["loaded_mib"].get("VmHWM")),
                _change(m, "RssAnon"),
                _change(m, "RssFile"),
                m["listed_queued"],
                m.get("open_database_files", "n/a") if db == "sqlite" else "",
            )
        )
    lines = table(
        (
            "database",
            "idle MiB",
            "after 100 MiB",
            "open escalations",
            "RSS MiB",
            "peak MiB",
            "anonymous MiB (idle -> open)",
            "file-backed MiB",
            "listed queued",
            "SQLite connections open",
        ),
        rows,
    )
    if imports := memory.get("imports"):
        lines.append(
            "What importing costs, before any work (a fresh interpreter importing each in turn,"
            " VmRSS after each step):"
        )
        lines.append("")
        lines += table(
            ("import", "RSS MiB", "+ MiB"),
            ((f"`{i['module']}`", number(i["rss_mib"]), number(i["delta_mib"])) for i in imports),
        )
    return lines


def _simulator(simulator: dict[str, Any]) -> list[str]:
    s, config = simulator["summary"], simulator["config"]
    return [
        f"bench/simulator_bench.py: {config['count']:,} creations per run at concurrency"
        f" {config['concurrency']}, {config['runs']} run(s):"
        f" {number(s['creations_per_second'], 0)} creations/s, p50 {number(s['p50_ms'])} ms,"
        f" p99 {number(s['p99_ms'])} ms, {s['errors']} errors.",
        "",
    ]


SECTIONS: tuple[tuple[str, str, Callable[[dict[str, Any]], list[str]]], ...] = (
    ("ack", "1. Ack path: `POST /escalations`", _ack),
    ("baseline", "2. Inline baseline (sync SDK in the handler) vs escalator", _baseline),
    ("time-to-task", "3. Time to task", _time_to_task),
    ("drain", "4. Drain under a rate limit", _drain),
    ("events", "5. Events: `POST /taskrouter/events`", _events),
    ("memory", "6. Memory of `escalator serve`", _memory),
    ("simulator", "7. Simulator", _simulator),
)
