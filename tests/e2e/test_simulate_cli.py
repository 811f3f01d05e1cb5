"""``escalator simulate`` as a developer runs it: every flag documented, and the flags acted on."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from escalator.cli import _parser
from tests.e2e.conftest import Simulator, seeded_simulator
from tests.e2e.processes import ESCALATOR, clean_environ, one_stderr_line


def _simulate_parser() -> argparse.ArgumentParser:
    commands = next(
        action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    return commands.choices["simulate"]


def test_help_documents_every_flag() -> None:
    result = subprocess.run(
        [*ESCALATOR, "simulate", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=clean_environ(),
        timeout=30,
    )
    flags = [
        action
        for action in _simulate_parser()._actions
        if action.option_strings != ["-h", "--help"]
    ]
    assert len(flags) >= 15
    for action in flags:
        assert action.help, f"{action.option_strings} has no help text"
        assert action.option_strings[-1] in result.stdout


@pytest.mark.parametrize(
    "flag",
    [
        "--error-rate=tasks.create=503:2",
        "--latency=tasks.create=soon",
        "--worker-policy=accept=3",
        "--callback-faults=drop=7",
        "--rate-limit=0",
        "--evaluate-per-second=0",
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(flag: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [*ESCALATOR, "simulate", flag, "--port", "0"],
        capture_output=True,
        text=True,
        env=clean_environ(),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert flag.split("=", 1)[0] in one_stderr_line(result)


async def _sdk(simulator: Simulator) -> tuple[Client, AsyncTwilioHttpClient]:
    http = AsyncTwilioHttpClient()
    client = Client(simulator.account_sid, simulator.auth_token, http_client=http, environment={})
    client.taskrouter.base_url = simulator.url
    return client, http


async def test_flags_make_workers_act_and_operations_fail(tmp_path: Path) -> None:
    policy = "accept=1,answer_after=0,complete_after=none"
    with seeded_simulator(
        tmp_path,
        "--worker-policy",
        policy,
        "--error-rate",
        "tasks.fetch=503:1",
        "--evaluate-per-second",
        "off",
        "--random-seed",
        "4",
    ) as simulator:
        client, http = await _sdk(simulator)
        try:
            ws = client.taskrouter.v1.workspaces(simulator.workspace_sid)
            task = await ws.tasks.create_async(
                attributes=json.dumps({"department": "billing", "skills": ["billing"]}),
                workflow_sid=simulator.workflow_sid,
            )
            with pytest.raises(TwilioRestException) as failed:
                await ws.tasks(task.sid).fetch_async()
            assert failed.value.status == 503
            for _ in range(50):
                [listed] = await ws.tasks.list_async()
                if listed.assignment_status == "assigned":
                    break
            assert listed.assignment_status == "assigned"
        finally:
            await http.close()
