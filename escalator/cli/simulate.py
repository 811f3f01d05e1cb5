"""``escalator simulate``: the TaskRouter simulator alone, with its faults, limits and workers."""

from __future__ import annotations

import argparse
import math
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from escalator.cli.running import provision_simulator, start_simulator_or_fail, until_signalled
from escalator.routing import load_routing
from escalator.simulator import Fault, RunningSimulator
from escalator.simulator.agents import policy_from_text
from escalator.simulator.callbacks import CallbackFaults, callback_faults_from_json
from escalator.simulator.faults import fault_from_json

__all__ = ["add_simulate_parser", "configure_simulator", "run_simulator"]

T = TypeVar("T")


def _typed(parse: Callable[[str], T], what: str) -> Callable[[str], T]:
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{what}: {exc}") from None

    convert.__name__ = what
    return convert


def _operation_value(text: str) -> tuple[str, str]:
    operation, sep, value = text.partition("=")
    if not sep or not operation:
        raise ValueError(f"expected OPERATION=VALUE, got {text!r}")
    return operation, value


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _fault(**fields: object) -> Fault:
    # The control API's validation, so a flag is refused exactly as its JSON twin would be.
    return fault_from_json({**fields, "times": None})


def _latency(text: str) -> Fault:
    operation, value = _operation_value(text)
    low, _, high = value.partition(":")
    extra = {"latency_max": _number(high)} if high else {}
    return _fault(operation=operation, status=None, latency=_number(low), **extra)


def _error_rate(text: str) -> Fault:
    operation, value = _operation_value(text)
    status, sep, probability = value.partition(":")
    if not sep:
        raise ValueError(f"expected OPERATION=STATUS:PROBABILITY, got {text!r}")
    return _fault(operation=operation, status=int(status), probability=_number(probability))


def _ambiguous_rate(text: str) -> Fault:
    operation, value = _operation_value(text)
    return _fault(operation=operation, ambiguous="reset", probability=_number(value))


def _rate_limit(text: str) -> tuple[float, float | None]:
    rate, _, burst = text.partition(":")
    if _number(rate) <= 0 or (burst and _number(burst) < 1):
        raise ValueError("RATE must be > 0 and BURST >= 1")
    return _number(rate), _number(burst) if burst else None


def _evaluate_limit(text: str) -> int | None:
    if text == "off":
        return None
    if int(text) < 1:
        raise ValueError("N must be at least 1, or 'off'")
    return int(text)


def _callback_faults(text: str) -> CallbackFaults:
    body: dict[str, object] = {}
    for part in filter(None, (item.strip() for item in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"expected name=value, got {part!r}")
        body[name] = value.lower() in {"1", "true", "yes"} if name == "reorder" else _number(value)
    faults, _ = callback_faults_from_json(body)
    return faults


def add_simulate_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """The ``simulate`` subcommand and every flag it takes."""
    simulate = commands.add_parser(
        "simulate",
        help="run the TaskRouter simulator alone",
        description="A local TaskRouter v1 that the twilio SDK talks to over HTTP. Control "
        "endpoints (faults, limits, clock, worker policies, calls) live under /_sim/.",
    )
    simulate.add_argument("--host", default="127.0.0.1", help="address to listen on")
    simulate.add_argument("--port", type=int, default=8090, help="port to listen on (0: any)")
    simulate.add_argument("--account-sid", default=None, help="default: a generated AC… SID")
    simulate.add_argument("--auth-token", default=None, help="default: a generated token")
    simulate.add_argument(
        "--seed",
        type=Path,
        metavar="ROUTING_FILE",
        help="create the workspace this routing file describes and print its SIDs",
    )
    simulate.add_argument(
        "--random-seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of every random choice (faults, worker policies), so runs replay",
    )
    simulate.add_argument(
        "--virtual-clock",
        action="store_true",
        help='time stands still until POST /_sim/clock/advance {"seconds": N}',
    )
    simulate.add_argument(
        "--worker-policy",
        type=_typed(policy_from_text, "worker policy"),
        metavar="SPEC",
        help="make every worker act, e.g. accept=0.8,reject=0.1,answer_after=2,"
        "complete_after=30,offline=0 (the rest of accept+reject lets reservations time out)",
    )
    simulate.add_argument(
        "--latency",
        type=_typed(_latency, "latency"),
        action="append",
        default=[],
        metavar="OP=SEC[:MAX]",
        help="add latency to an operation (e.g. tasks.create=0.15, or *=0.05:0.2); repeatable",
    )
    simulate.add_argument(
        "--error-rate",
        type=_typed(_error_rate, "error rate"),
        action="append",
        default=[],
        metavar="OP=STATUS:P",
        help="fail an operation with STATUS with probability P; repeatable",
    )
    simulate.add_argument(
        "--ambiguous-rate",
        type=_typed(_ambiguous_rate, "ambiguous rate"),
        action="append",
        default=[],
        metavar="OP=P",
        help="carry out the operation, then reset the connection, with probability P; repeatable",
    )
    simulate.add_argument(
        "--rate-limit",
        type=_typed(_rate_limit, "rate limit"),
        metavar="RATE[:BURST]",
        help="429 (code 20429) once a workspace exceeds RATE requests/s (token bucket)",
    )
    simulate.add_argument(
        "--evaluate-per-second",
        type=_typed(_evaluate_limit, "evaluate limit"),
        default=3,
        metavar="N|off",
        help="EvaluateTaskAttributes lists per second per workspace (Twilio: 3)",
    )
    simulate.add_argument(
        "--retry-after",
        action="store_true",
        help="send Retry-After with 429s (Twilio does not document it for TaskRouter)",
    )
    simulate.add_argument(
        "--callback-faults",
        type=_typed(_callback_faults, "callback faults"),
        metavar="SPEC",
        help="event callback faults, e.g. drop=0.1,duplicate=0.1,delay=0.2,reorder=1",
    )
    simulate.add_argument(
        "--assignment-timeout",
        type=float,
        default=5.0,
        metavar="SEC",
        help="how long an assignment callback may take before the fallback URL (Twilio: 5)",
    )


def configure_simulator(simulator: RunningSimulator, args: argparse.Namespace) -> None:
    """Apply the faults, limits and policies the flags ask for."""
    state = simulator.state
    for fault in [*args.latency, *args.error_rate, *args.ambiguous_rate]:
        state.faults.add(fault)
    rate, burst = args.rate_limit or (None, None)
    state.limits.configure(
        rate=rate,
        burst=burst,
        evaluate_per_second=args.evaluate_per_second,
        retry_after=args.retry_after,
    )
    if args.callback_faults is not None:
        state.callbacks.set_faults(args.callback_faults, seed=args.random_seed)
    state.callbacks.assignment_timeout = args.assignment_timeout
    state.agents.default = args.worker_policy
    state.agents.reseed(args.random_seed)


async def run_simulator(args: argparse.Namespace) -> None:
    """Run the simulator until SIGINT or SIGTERM."""
    account_sid = args.account_sid or f"AC{secrets.token_hex(16)}"
    auth_token = args.auth_token or secrets.token_hex(16)
    routing = load_routing(args.seed) if args.seed else None
    simulator = await start_simulator_or_fail(
        args.host,
        args.port,
        account_sid,
        auth_token,
        virtual_clock=args.virtual_clock,
        seed=args.random_seed,
    )
    try:
        configure_simulator(simulator, args)
        print(f"TaskRouter simulator at {simulator.url}  (account {account_sid})", flush=True)
        if not args.auth_token:
            print(f"auth token: {auth_token}", flush=True)
        if routing is not None:
            seeded = await provision_simulator(simulator, account_sid, auth_token, routing)
            print(f"ESCALATOR_WORKSPACE_SID={seeded.workspace_sid}")
            print(f"ESCALATOR_WORKFLOW_SID={seeded.workflow_sid}")
            for kind, sids in (("queue", seeded.task_queues), ("worker", seeded.workers)):
                for name, sid in sids.items():
                    print(f"{kind} {name}: {sid}")
            sys.stdout.flush()
        await until_signalled()
    finally:
        await simulator.close()
