"""What the benchmark scripts share: constants, statistics, the machine, CPU and memory.

The service and the simulator run as child processes (processes.py); this process is the load
generator (load.py), over loopback. Nothing here knows a scenario.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import aiohttp

__all__ = [
    "ACCOUNT_SID",
    "API_KEY",
    "AUTH_TOKEN",
    "BENCH_DIR",
    "PUBLIC_URL",
    "REPO_ROOT",
    "ROUTING_FILE",
    "Context",
    "CpuMeter",
    "commit_ceiling",
    "cpu_model",
    "filesystem",
    "loadavg",
    "machine_context",
    "median",
    "percentile",
    "rss_mib",
    "scrub",
    "summarize",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
ROUTING_FILE = REPO_ROOT / "escalator" / "resources" / "routing.yaml"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "bench-simulator-auth-token"  # noqa: S105 - the local simulator's, not a secret
API_KEY = "bench-api-key-0123456789"
# Behind a TLS-terminating ingress: Twilio signs this URL; the socket is plain loopback.
PUBLIC_URL = "https://escalator.bench.example"
PACKAGES = (
    "escalator",
    "aiohttp",
    "twilio",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "pydantic",
    "structlog",
    "prometheus-client",
    "requests",
)
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ---------------------------------------------------------------- statistics


def percentile(ordered: list[float], fraction: float) -> float:
    """The value at ``fraction`` (0..1) of an ascending list, nearest rank."""
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summarize(seconds: Iterable[float]) -> dict[str, float]:
    """Count, p50, p99 and max of durations in seconds, as milliseconds."""
    ordered = sorted(seconds)
    if not ordered:
        return {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    return {
        "count": len(ordered),
        "p50_ms": round(percentile(ordered, 0.5) * 1000, 2),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None, or None."""
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


# ---------------------------------------------------------------- the machine


def cpu_model() -> str:
    """The CPU model name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def filesystem(path: Path) -> str:
    """The filesystem holding `path` (fsync costs differ by orders of magnitude between them),
    named by its type and device, not its paths."""
    best = ("", "unknown")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind = line.split()[:3]
            if str(path.resolve()).startswith(mount) and len(mount) >= len(best[0]):
                best = (mount, f"{kind} on {Path(device).name}")
    except OSError:
        pass
    return best[1]


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_context(workdir: Path) -> dict[str, Any]:
    """CPU, cores, memory, Python, package versions, SQLite and the disk the databases are on."""
    memory = ""
    with contextlib.suppress(OSError):
        memory = Path("/proc/meminfo").read_text().split("\n", 1)[0].split(":", 1)[1].strip()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_total": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "packages": {name: _version(name) for name in PACKAGES},
        "sqlite": {
            "version": sqlite3.sqlite_version,
            "journal_mode": "WAL",
            "synchronous": "FULL",
            "filesystem": filesystem(workdir),
        },
        "loadavg_at_start": loadavg(),
    }


def commit_ceiling(workdir: Path, seconds: float = 1.5) -> float:
    """Commits/s of one small INSERT per transaction, WAL and synchronous=FULL, in `workdir`:
    what a store that commits each write alone could at most reach on this disk."""
    path = workdir / f"ceiling-{secrets.token_hex(4)}.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (body) VALUES (?)", ("x" * 200,))
            db.execute("COMMIT")
            count += 1
        return round(count / elapsed, 1)
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def scrub(value: Any, replacements: Mapping[str, str]) -> Any:
    """`value` with every occurrence of the given strings (this machine's paths) replaced."""
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {k: scrub(v, replacements) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, replacements) for v in value]
    return value


# ---------------------------------------------------------------- CPU and memory


def _process_stat(pid: int | str) -> tuple[str, float] | None:
    """A process's command name and CPU seconds (user + system, all threads)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.find("(") + 1 : text.rfind(")")]
    fields = text.rsplit(")", 1)[1].split()
    return name, (int(fields[11]) + int(fields[12])) / _TICK


def _all_processes() -> dict[int, tuple[str, float]]:
    found = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit() and (stat := _process_stat(entry)) is not None:
            found[int(entry)] = stat
    return found


def _machine_cpu() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine, all cores, from /proc/stat."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / _TICK, sum(ticks) / _TICK


class CpuMeter:
    """Who used the CPUs between construction and `read()`: named groups of processes, the
    PostgreSQL server, everything else (with its busiest processes named), idle.

    On a shared machine, other work steals cores from the system under test, and the figures
    with them: this says how much. Kernel time not charged to a process (loopback networking
    in softirq) counts as "other".
    """

    def __init__(self, groups: Mapping[str, Iterable[int]]) -> None:
        self._groups = {name: set(pids) for name, pids in groups.items()}
        self._start = _all_processes()
        self._machine = _machine_cpu()
        self._wall = time.perf_counter()

    def read(self) -> dict[str, Any]:
        """Cores used by each group, `postgres`, `other` and `idle`; CPU seconds per group."""
        end, (busy1, total1) = _all_processes(), _machine_cpu()
        busy = busy1 - self._machine[0]
        total = total1 - self._machine[1]
        wall = total / (os.cpu_count() or 1) or (time.perf_counter() - self._wall) or 1.0
        used: Counter[str] = Counter()
        others: Counter[str] = Counter()
        for pid, (name, cpu) in end.items():
            before = self._start.get(pid)
            delta = cpu - (before[1] if before and before[0] == name else 0.0)
            if delta <= 0:
                continue
            group = next((g for g, pids in self._groups.items() if pid in pids), None)
            if group is None and name == "postgres":
                group = "postgres"
            if group is None:
                others[f"{name}"] += delta
            else:
                used[group] += delta
        result: dict[str, Any] = {}
        for group in [*self._groups, "postgres"]:
            result[f"{group}_cores"] = round(used[group] / wall, 2)
            result[f"{group}_cpu_s"] = round(used[group], 3)
        result["other_cores"] = round(max(0.0, busy - sum(used.values())) / wall, 2)
        result["idle_cores"] = round(max(0.0, total - busy) / wall, 2)
        result["others_top"] = {
            name: round(cpu / wall, 2) for name, cpu in others.most_common(3) if cpu / wall >= 0.01
        }
        result["loadavg_1m"] = (loadavg() or [0.0])[0]
        return result


def rss_mib(pid: int) -> dict[str, float]:
    """A process's resident memory now (VmRSS), at its peak (VmHWM), and now split into
    anonymous memory (heaps, SQLite's page caches) and file-backed (code, libraries), MiB."""
    found: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                found[name] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return found


# ---------------------------------------------------------------- what a scenario gets


@dataclass
class Context:
    """What every scenario gets from run.py: where to write, how long, which databases."""

    workdir: Path
    http: aiohttp.ClientSession
    quick: bool
    runs: int
    postgres_admin: str | None
    log: Callable[[str], None] = print
    py_spy: str | None = None

    def pick(self, full: Any, quick: Any) -> Any:
        """`full`, or `quick` in a --quick run."""
        return quick if self.quick else full
