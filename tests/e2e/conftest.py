"""Fixtures of the end-to-end tests: a seeded ``escalator simulate`` process."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from escalator.routing import bundled_routing_path
from tests.e2e.processes import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    ESCALATOR,
    clean_environ,
    free_port,
    stop,
)


@dataclass(frozen=True)
class Simulator:
    url: str
    account_sid: str
    auth_token: str
    workspace_sid: str
    workflow_sid: str


@contextmanager
def seeded_simulator(tmp_path: Path, *flags: str) -> Iterator[Simulator]:
    """``escalator simulate --seed`` with the bundled routing file and ``flags``, on a free port."""
    port = free_port()
    output = tmp_path / "simulator.stdout"
    with output.open("wb") as stdout:
        process = subprocess.Popen(
            [
                *ESCALATOR,
                "simulate",
                *("--seed", str(bundled_routing_path())),
                *("--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN),
                *("--port", str(port)),
                *flags,
            ],
            cwd=tmp_path,
            env=clean_environ(),
            stdout=stdout,
            stderr=subprocess.DEVNULL,
        )
    try:
        sids: dict[str, str] = {}
        deadline = time.monotonic() + 20
        while len(sids) < 2:
            assert process.poll() is None, f"the simulator exited with {process.returncode}"
            assert time.monotonic() < deadline, "the simulator printed no SIDs within 20 s"
            time.sleep(0.05)
            for line in output.read_text(encoding="utf-8").splitlines():
                name, _, value = line.partition("=")
                if name in {"ESCALATOR_WORKSPACE_SID", "ESCALATOR_WORKFLOW_SID"}:
                    sids[name] = value.strip()
        yield Simulator(
            url=f"http://127.0.0.1:{port}",
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            workspace_sid=sids["ESCALATOR_WORKSPACE_SID"],
            workflow_sid=sids["ESCALATOR_WORKFLOW_SID"],
        )
    finally:
        if process.poll() is None:
            stop(process)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    """``escalator simulate --seed`` with the bundled routing file, on a free port."""
    with seeded_simulator(tmp_path) as running:
        yield running
