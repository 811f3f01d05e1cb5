"""What a chaos run is asked to do (``ChaosConfig``) and what it found (``ChaosResult``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.clients import Agents
from tests.chaos.verify import Verdict
from tests.chaos.waits import time_to_task

__all__ = ["DEFAULT_POSTGRES_URL", "ChaosConfig", "ChaosResult", "client_stats"]

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class ChaosConfig:
    """What one run does; the defaults are a CI-sized PostgreSQL run."""

    database: str = "postgresql"
    escalations: int = 150
    replicas: int = 2
    kills: int = 3
    restart_postgres: bool = False
    seed: int = 1
    rate: float = 20.0
    concurrency: int = 32
    drain_timeout: float = 120.0
    postgres_url: str = field(
        default_factory=lambda: os.environ.get("ESCALATOR_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )
    keep_workdir: bool = False
    quiet: bool = False


@dataclass
class ChaosResult:
    """What happened, and the verdict."""

    config: ChaosConfig
    verdict: Verdict = field(default_factory=Verdict)
    started_at: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    kills: list[dict[str, Any]] = field(default_factory=list)
    restarts: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    postgres_restart: dict[str, Any] = field(default_factory=dict)
    faults_turned_on: list[str] = field(default_factory=list)
    faults_fired: dict[str, int] = field(default_factory=dict)
    callbacks: dict[str, int] = field(default_factory=dict)
    proxy: dict[str, float] = field(default_factory=dict)
    proxy_errors: list[str] = field(default_factory=list)
    clients: dict[str, Any] = field(default_factory=dict)
    service_log: dict[str, Any] = field(default_factory=dict)
    drain: dict[str, Any] = field(default_factory=dict)
    supervisor: dict[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    workdir: str = ""

    @property
    def ok(self) -> bool:
        v = self.verdict
        return not (v.lost or v.duplicated or v.mismatched)

    @property
    def line(self) -> str:
        return self.verdict.line


def client_stats(agents: Agents, escalations: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the agents saw, for the report."""
    return {
        "acknowledged": len(agents.acked),
        "escalations_held": len(escalations),
        "answers": dict(agents.answers),
        "retries": agents.retries,
        "answers_409": agents.answers.get("409", 0),
        "replays_sent": agents.replays,
        "gave_up": agents.gave_up,
        "cancels": dict(agents.cancels),
        "conversations_with_several_escalations": sum(
            1 for ids in agents.ids_by_conversation.values() if len(ids) > 1
        ),
        "unexpected_answers": agents.unexpected[:20],
        "time_to_task_s": time_to_task(escalations),
    }
