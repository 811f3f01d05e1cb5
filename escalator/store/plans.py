"""Statement plans: a transaction's statements as a generator, run on either kind of connection.

A plan yields each statement and is sent its answer, so one plan serves SQLite's writer thread
(a synchronous connection, the whole transaction in one hop to that thread) and the event
loop's asynchronous connection (PostgreSQL) alike.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Plan", "Step", "run_in_thread", "run_on_loop"]

Result = TypeVar("Result")


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a plan: rows back when ``reads``, else the count of rows written."""

    statement: Any
    parameters: Any = None
    reads: bool = False

    def answer(self, result: CursorResult[Any]) -> Any:
        """What the plan is sent back for this step."""
        return result.mappings().all() if self.reads else result.rowcount


Plan = Generator[Step, Any, Result]


def run_in_thread(plan: Plan[Result], connection: Connection) -> Result:
    """Carry out ``plan`` on a synchronous connection (SQLite's writer thread)."""
    answer = None
    while True:
        try:
            step = plan.send(answer)
        except StopIteration as done:
            result: Result = done.value
            return result
        answer = step.answer(connection.execute(step.statement, step.parameters))


async def run_on_loop(plan: Plan[Result], connection: AsyncConnection) -> Result:
    """Carry out ``plan`` on an asynchronous connection."""
    answer = None
    while True:
        try:
            step = plan.send(answer)
        except StopIteration as done:
            result: Result = done.value
            return result
        answer = step.answer(await connection.execute(step.statement, step.parameters))
