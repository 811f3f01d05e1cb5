"""Profiles of a running service with py-spy (not a dependency: see bench/README.md)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["py_spy_profile"]

# ---------------------------------------------------------------- profiles


def _frame(text: str) -> str:
    """`create (escalator/api/escalations.py:89)` without its line number."""
    return re.sub(r":\d+\)$", ")", text)


async def py_spy_profile(
    py_spy: str, pid: int, seconds: float, out: Path, *, gil: bool = False
) -> dict[str, Any]:
    """Sample `pid` with py-spy for `seconds`, without pausing it: every thread's active
    samples (running, or blocked in a system call such as fsync), or with `gil` only the
    thread holding the GIL (where Python's CPU goes); the functions by share of samples,
    inclusive and self."""
    process = await asyncio.create_subprocess_exec(
        *(py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))),
        *("--rate", "200", "--nonblocking", "--format", "raw", "--output", str(out)),
        *(("--gil",) if gil else ()),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await process.wait()
    return _raw_profile(out)


def _raw_profile(out: Path) -> dict[str, Any]:
    """py-spy's raw output (one `frame;frame;... count` line per stack) summarised."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    with contextlib.suppress(OSError):
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            frames = [_frame(f) for f in stack.split(";") if f]
            total += int(count)
            if frames:
                own[frames[-1]] += int(count)
            for frame in set(frames):
                inclusive[frame] += int(count)
    if not total:
        return {"samples": 0, "threads": {}, "inclusive": [], "self": []}
    threads = {
        name: round(inclusive.get(frame, 0) / total, 3)
        for name, frame in (
            ("event loop", "_serve (escalator/cli/__init__.py)"),
            ("aiosqlite connection threads", "_connection_worker_thread (aiosqlite/core.py)"),
            ("executor threads", "_worker (concurrent/futures/thread.py)"),
        )
    }
    telling = [(f, n / total) for f, n in inclusive.most_common() if _telling(f)]
    return {
        "samples": total,
        "threads": threads,
        "inclusive": [(f, round(share, 3)) for f, share in telling[:30]],
        "self": [(f, round(n / total, 3)) for f, n in own.most_common(15)],
    }


_PLUMBING = (
    "(threading.py)",
    "(asyncio/",
    "(<frozen runpy>)",
    "(escalator/cli/__init__.py)",
    "(escalator/__main__.py)",
    "(concurrent/futures/",
    "(contextlib.py)",
    "(selectors.py)",
    "_run_module_as_main",
    "aiohttp/web_protocol.py",
    "aiohttp/web_app.py",
    "aiohttp/web_middlewares.py",
)


def _telling(frame: str) -> bool:
    """Whether a frame says where the work is (not the event loop's or a thread's plumbing)."""
    return bool(frame) and not any(p in frame for p in _PLUMBING)
