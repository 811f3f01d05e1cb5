"""Helpers for tests that run escalator as a separate process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ESCALATOR = [sys.executable, "-m", "escalator"]
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "e2e-simulator-auth-token"


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without any escalator or Twilio setting, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ESCALATOR_", "TWILIO_"))
    }
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_escalator(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ESCALATOR, *args],
        cwd=cwd,
        env=env if env is not None else clean_environ(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_stderr_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single readable line a failing command must print, and no traceback."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def stop(process: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """SIGTERM, then the exit status; kill (and fail) if it does not exit within ``timeout``."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"{process.args} did not exit within {timeout} s of SIGTERM")
