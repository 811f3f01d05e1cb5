"""The fault suite, CI-sized: replicas SIGKILLed while TaskRouter fails and agents retry, then
TaskRouter's record must match the service's exactly (``make chaos`` runs it at full size)."""

from __future__ import annotations

import pytest

from tests.chaos.config import ChaosConfig, ChaosResult
from tests.chaos.harness import run_chaos
from tests.chaos.report import summary_lines

# Each run starts the simulator and serve processes and takes 20 to 40 s on two cores.
pytestmark = pytest.mark.timeout(240)


def _assert_nothing_lost_duplicated_or_mismatched(result: ChaosResult) -> None:
    evidence = "\n".join(summary_lines(result))
    assert result.line == "lost=0 duplicated=0 mismatched=0", evidence
    config, clients = result.config, result.clients
    assert len(result.kills) == config.kills, evidence
    assert result.unexpected_exits == [], evidence
    assert result.drain.get("drained"), evidence
    # Every conversation was acknowledged at least once, and no agent gave up or was refused.
    assert clients["acknowledged"] >= config.escalations, evidence
    assert clients["gave_up"] == 0, evidence
    assert clients["unexpected_answers"] == [], evidence
    assert result.service_log["alarms"] == {}, evidence
    # The chaos did happen: creates whose answer was lost, and event callbacks dropped.
    assert result.faults_fired["create ambiguous (reset after create)"] > 0, evidence
    assert result.callbacks.get("event:dropped", 0) > 0, evidence


@pytest.mark.postgres
async def test_two_replicas_on_postgresql_create_exactly_one_task_per_escalation_under_kills(
    postgres_available: bool,
) -> None:
    config = ChaosConfig(
        database="postgresql", escalations=150, replicas=2, kills=3, seed=11, quiet=True
    )
    _assert_nothing_lost_duplicated_or_mismatched(await run_chaos(config))


async def test_one_sqlite_process_killed_and_restarted_creates_exactly_one_task_each() -> None:
    config = ChaosConfig(
        database="sqlite", escalations=100, replicas=1, kills=1, seed=12, quiet=True
    )
    _assert_nothing_lost_duplicated_or_mismatched(await run_chaos(config))
