"""One chaos run: the simulator, N ``escalator serve`` replicas on one database behind a
round-robin proxy, agents POSTing with retries, SIGKILLs, TaskRouter faults, maybe a PostgreSQL
restart; then the faults stop, the system drains, and TaskRouter's record is compared with the
service's. ``run_chaos`` returns a ``ChaosResult`` (tests/chaos/config.py) with the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from twilio.http.async_http_client import AsyncTwilioHttpClient

from escalator.domain.effects import KNOWN_EVENTS
from tests.chaos.clients import Agents, Intent, plan_intents
from tests.chaos.config import ChaosConfig, ChaosResult, client_stats
from tests.chaos.faults import SimulatorControl
from tests.chaos.logs import digest_logs
from tests.chaos.processes import (
    Database,
    Replica,
    Simulator,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    restart_postgres,
    run_migrate,
    service_environ,
    start_simulator,
)
from tests.chaos.proxy import CallbackProxy
from tests.chaos.supervisor import Supervisor
from tests.chaos.verify import (
    OPEN_ESCALATION_STATUSES,
    OPEN_TASK_STATUSES,
    read_escalations,
    read_simulator,
    sdk_client,
    verdict,
)
from tests.chaos.waits import drain_stats

__all__ = ["ChaosConfig", "ChaosResult", "run_chaos"]

# While the load runs: accept 80 %, reject 12 %, let 8 % time out (2 s), each in 0.2 s;
# complete an accepted task 0.3 s later. While draining: accept everything at once.
WORKING = "accept=0.8,reject=0.12,answer_after=0.2,complete_after=0.3"
RUSH = {"accept": 1.0, "reject": 0.0, "answer_after": 0.05, "complete_after": 0.1}
_POLL = 1.0
# GET /_sim/callbacks/deliveries returns every callback with its parameters: past this many
# escalations its answer runs to tens of megabytes, so the callback counts are not read.
_DELIVERIES_UP_TO = 600


class _Run:
    """The moving parts of one run and the tasks that shake them."""

    def __init__(self, config: ChaosConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        # One generator per consumer, drawn in a fixed order, so that the timing of one part
        # cannot change the choices of another: a seed replays the same plan.
        master = random.Random(config.seed)
        self.plan_rng, self.agent_rng, self.kill_rng = (
            random.Random(master.getrandbits(64)) for _ in range(3)
        )
        self.callback_seed = master.randrange(2**31)
        self.outage_fraction = master.uniform(0.2, 0.4)
        self.result = ChaosResult(config=config, workdir=str(workdir))
        self.replicas: list[Replica] = []
        self.restarting: set[int] = set()
        self.proxy = CallbackProxy(lambda: [r.url for r in self.replicas if r.alive])
        self.simulator: Simulator | None = None
        self.database: Database | None = None
        self.done_loading = asyncio.Event()
        self.since = datetime.now(UTC) - timedelta(minutes=5)

    def say(self, text: str) -> None:
        if not self.config.quiet:
            print(f"[chaos {self.config.database}] {text}", flush=True)

    async def set_up(self, session: aiohttp.ClientSession) -> SimulatorControl:
        config = self.config
        self.simulator = await start_simulator(
            self.workdir, seed=config.seed, worker_policy=WORKING
        )
        if config.database == "postgresql":
            self.database = await create_postgres_database(config.postgres_url)
        else:
            self.database = Database("sqlite", f"sqlite:///{self.workdir / 'escalator.db'}")
        await self.proxy.start(free_port())
        async with AsyncTwilioHttpClient() as http:
            workspace = sdk_client(http, self.simulator.url).taskrouter.v1.workspaces(
                self.simulator.workspace_sid
            )
            # TaskRouter's callbacks go to the "Service" (the proxy), as in Kubernetes; only
            # the event types escalator knows, as a deployment's EventsFilter would ask.
            await workspace.update_async(
                event_callback_url=f"{self.proxy.url}/taskrouter/events",
                events_filter=",".join(sorted(KNOWN_EVENTS)),
            )
        for index in range(config.replicas):
            port = free_port()
            env = service_environ(
                database_url=self.database.url,
                port=port,
                public_url=self.proxy.url,
                simulator=self.simulator,
                replicas=config.replicas,
            )
            self.replicas.append(Replica(index, port, env, self.workdir))
        await run_migrate(self.replicas[0].env, self.workdir)
        for replica in self.replicas:
            replica.start()
        for replica in self.replicas:
            if not await replica.ready(session):
                raise RuntimeError(f"replica {replica.index} did not become ready:\n{replica.log}")
        control = SimulatorControl(self.simulator.url, session)
        await control.start(self.callback_seed, config.rate)
        self.result.faults_turned_on = control.turned_on
        return control

    async def keep_replicas_up(self) -> None:
        """Restart, a second later, any replica that exited by itself (recorded: none should)."""
        while True:
            for replica in self.replicas:
                if replica.index in self.restarting:
                    continue
                status = replica.exited_by_itself()
                if status is not None:
                    self.say(f"replica {replica.index} exited by itself ({status}); restarting")
                    self.result.unexpected_exits.append(
                        f"replica {replica.index}: {replica.unexpected_exits[-1]}"
                    )
                    await asyncio.sleep(1.0)
                    replica.start()
                    self.result.restarts += 1
            await asyncio.sleep(0.2)

    async def outage(self, agents: Agents, total: int, control: SimulatorControl) -> None:
        """A short TaskRouter outage once, somewhere in the first half of the load."""
        while agents.finished < total * self.outage_fraction and not self.done_loading.is_set():
            await asyncio.sleep(0.05)
        await control.outage()
        self.say("TaskRouter outage: the next 30 creates fail with 503")

    async def kill_and_restart(self, replica: Replica, delay: float) -> None:
        self.restarting.add(replica.index)
        try:
            replica.kill()
            await asyncio.sleep(delay)
            replica.start()
            self.result.restarts += 1
        finally:
            self.restarting.discard(replica.index)

    async def killer(self, agents: Agents, total: int) -> None:
        """SIGKILL a random replica each time the load passes one of the random thresholds."""
        config = self.config
        thresholds = sorted(self.kill_rng.uniform(0.03, 0.9) * total for _ in range(config.kills))
        began = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        for threshold in thresholds:
            while agents.finished < threshold and not self.done_loading.is_set():
                await asyncio.sleep(0.05)
            await asyncio.sleep(self.kill_rng.uniform(0.0, 0.5))
            candidates = [r for r in self.replicas if r.index not in self.restarting]
            while not candidates:  # every replica is restarting (one, on SQLite): the kill waits
                await asyncio.sleep(0.1)
                candidates = [r for r in self.replicas if r.index not in self.restarting]
            victim = self.kill_rng.choice(candidates)
            delay = self.kill_rng.uniform(0.2, 1.5)
            self.result.kills.append(
                {
                    "at_s": round(time.monotonic() - began, 2),
                    "replica": victim.index,
                    "was_running": victim.alive,
                    "finished_requests": agents.finished,
                    "restart_after_s": round(delay, 2),
                }
            )
            self.say(f"SIGKILL replica {victim.index} (restart in {delay:.1f} s)")
            task = asyncio.create_task(self.kill_and_restart(victim, delay))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)

    async def postgres_restarter(self, agents: Agents, total: int) -> None:
        while agents.finished < total / 2 and not self.done_loading.is_set():
            await asyncio.sleep(0.05)
        self.say(
            "WARNING: restarting the PostgreSQL server now; every other session on it "
            "(other test runs included) loses its connections"
        )
        done, why, took = await restart_postgres(self.config.postgres_url)
        self.result.postgres_restart = {"done": done, "detail": why, "seconds": round(took, 2)}
        self.say(f"PostgreSQL restart: {'done' if done else 'NOT DONE'} ({why}, {took:.1f} s)")

    def live_url(self) -> str:
        live = [r.url for r in self.replicas if r.alive]
        return live[0] if live else self.replicas[0].url

    async def drain(self, session: aiohttp.ClientSession, control: SimulatorControl) -> bool:
        """Faults off, workers quick; wait until nothing is open anywhere and the outbox is
        empty (twice in a row)."""
        assert self.simulator is not None
        await control.stop()
        await control.set_worker_policy(RUSH)
        for replica in self.replicas:
            await replica.ready(session, within=30)
        deadline = time.monotonic() + self.config.drain_timeout
        began = time.monotonic()
        calm = 0
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            stats = await drain_stats(
                session,
                self.live_url(),
                self.simulator,
                OPEN_ESCALATION_STATUSES,
                OPEN_TASK_STATUSES,
            )
            calm = calm + 1 if stats["quiet"] else 0
            if calm >= 2:
                self.result.drain.update(drained=True, seconds=round(time.monotonic() - began, 1))
                return True
            await asyncio.sleep(_POLL)
        self.result.drain.update(drained=False, left=stats)
        self.say(f"drain incomplete after {self.config.drain_timeout:.0f} s: {stats}")
        return False

    async def tear_down(self) -> None:
        try:
            exits = await asyncio.gather(*(asyncio.to_thread(r.stop) for r in self.replicas))
            self.result.drain["sigterm_exit_codes"] = list(exits)
        finally:
            for replica in self.replicas:
                replica.kill()
            if self.simulator is not None:
                await asyncio.to_thread(self.simulator.stop)
            await self.proxy.close()
        if self.database is not None and self.config.keep_workdir:
            self.say(f"kept the database: {self.database.name or self.database.url}")
        elif self.database is not None:
            await drop_postgres_database(self.database)


async def _load(
    run: _Run, agents: Agents, intents: list[Intent], control: SimulatorControl
) -> None:
    """The agents' requests, with the kills, the outage and the PostgreSQL restart alongside."""
    total = len(intents)
    side = [
        asyncio.create_task(run.killer(agents, total)),
        asyncio.create_task(run.outage(agents, total, control)),
    ]
    throttling = asyncio.create_task(control.throttle_windows())
    if run.config.database == "postgresql" and run.config.restart_postgres:
        side.append(asyncio.create_task(run.postgres_restarter(agents, total)))
    try:
        await agents.run(intents, rate=run.config.rate, concurrency=run.config.concurrency)
    finally:
        run.done_loading.set()
        await _stop(throttling)
        await asyncio.gather(*side)


async def _verify(run: _Run, session: aiohttp.ClientSession, agents: Agents) -> None:
    """TaskRouter's record against the service's and the agents'."""
    assert run.simulator is not None
    result = run.result
    escalations = await read_escalations(session, run.live_url(), set(agents.acked))
    tasks = await read_simulator(run.simulator.url, run.simulator.workspace_sid, run.since)
    result.verdict = verdict(
        acknowledged=set(agents.acked),
        escalations=escalations,
        tasks=tasks,
        key_violations=agents.key_violations(),
    )
    result.clients = client_stats(agents, escalations)
    result.proxy = run.proxy.stats()
    result.proxy_errors = run.proxy.errors


async def _stop(task: asyncio.Task[None] | None) -> None:
    """Cancel a side task; one that had failed re-raises its error here."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_chaos(config: ChaosConfig) -> ChaosResult:
    """One run, start to verdict; the child processes are stopped whatever happens."""
    workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{config.database}-"))
    run = _Run(config, workdir)
    result = run.result
    result.started_at = datetime.now(UTC).isoformat(timespec="seconds")
    timings, began = result.timings, time.monotonic()
    keeper: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            control = await run.set_up(session)
            assert run.simulator is not None
            intents = plan_intents(config.escalations, run.plan_rng, f"{config.seed}")
            agents = Agents(urls=lambda: [r.url for r in run.replicas], rng=run.agent_rng)
            boss = Supervisor(
                run.simulator, session, run.live_url, run.since, lambda: agents.finished
            )
            keeper = asyncio.create_task(run.keep_replicas_up())
            watcher = asyncio.create_task(boss.run())
            timings["setup_s"] = round(time.monotonic() - began, 1)
            run.say(
                f"{len(intents)} requests for {config.escalations} conversations, "
                f"{config.replicas} replica(s), {config.kills} kills, seed {config.seed}"
            )
            loading = time.monotonic()
            await _load(run, agents, intents, control)
            timings["load_s"] = round(time.monotonic() - loading, 1)
            draining = time.monotonic()
            await run.drain(session, control)
            timings["drain_s"] = round(time.monotonic() - draining, 1)
            await _stop(watcher)
            result.supervisor = {
                "workers_put_back": boss.put_back,
                "grace_s": boss.grace,
                "evidence": boss.evidence,
            }
            result.timeline = boss.timeline
            result.faults_fired = dict(control.fired)
            if config.escalations <= _DELIVERIES_UP_TO:
                result.callbacks = dict(await control.callback_outcomes())
            else:
                result.callbacks = {"not read": "the simulator's delivery log is too large"}
            verifying = time.monotonic()
            await _verify(run, session, agents)
            timings["verify_s"] = round(time.monotonic() - verifying, 1)
    finally:
        try:
            await _stop(watcher)
            await _stop(keeper)
        finally:
            # Whatever failed above, no child process and no database outlives the run.
            await run.tear_down()
            result.service_log = digest_logs([r.log for r in run.replicas])
            timings["total_s"] = round(time.monotonic() - began, 1)
    if result.ok and not config.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
        result.workdir = ""
    return result
