"""Group commit: writes that arrive together share one transaction and one commit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeAlias, TypeVar

__all__ = ["GroupCommit"]

Item = TypeVar("Item")
Result = TypeVar("Result")

# What a batch function returns for each item: its result, or the error that item alone met.
Outcome: TypeAlias = Result | BaseException


class GroupCommit(Generic[Item, Result]):
    """Runs submitted items in batches through one writer, one transaction per batch.

    SQLite has a single writer and every commit is an fsync; with one transaction per request,
    requests queue behind each other's commits. Here, while one batch commits, the next
    gathers, so under load a commit carries many requests and at low load a lone request goes
    at once (no timer). Each caller is answered only after its batch committed: an
    acknowledgement still means the write is durable. No library offers this for asyncio.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Awaitable[Sequence[Outcome[Result]]]],
        *,
        max_batch: int,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """Run ``item`` in the next batch; its result once that batch has committed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="group-commit")
        return await future

    async def _write_all(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            batch = [(item, future) for item, future in batch if not future.cancelled()]
            if not batch:
                continue
            try:
                outcomes = await self._run_batch([item for item, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                    raise
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def close(self) -> None:
        """Wait for the batch being written; items not yet taken fail as cancelled."""
        writer, self._writer = self._writer, None
        pending, self._pending = self._pending, []
        for _, future in pending:
            future.cancel()
        if writer is not None and not writer.done():
            await asyncio.wait([writer])
