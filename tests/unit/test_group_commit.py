"""Group commit: items submitted together share a batch, and each caller hears its own result."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from escalator.store.group_commit import GroupCommit


class Recorder:
    """A batch function that records its batches and answers each item doubled."""

    def __init__(self, *, fail_on: int | None = None, refuse: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self._fail_on = fail_on
        self._refuse = refuse

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.release.wait()
        if self._fail_on in items:
            raise RuntimeError("the commit failed")
        return [ValueError(n) if n == self._refuse else n * 2 for n in items]


async def test_a_lone_item_goes_at_once_in_a_batch_of_its_own() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder, max_batch=10)

    assert await group.submit(1) == 2
    assert recorder.batches == [[1]]


async def test_items_that_arrive_while_a_batch_is_written_share_the_next_one() -> None:
    recorder = Recorder()
    recorder.release.clear()
    group = GroupCommit(recorder, max_batch=3)
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the writer has taken item 0 and is committing it
    later = [asyncio.create_task(group.submit(n)) for n in range(1, 6)]
    await asyncio.sleep(0)
    recorder.release.set()

    assert await asyncio.gather(first, *later) == [0, 2, 4, 6, 8, 10]
    assert recorder.batches == [[0], [1, 2, 3], [4, 5]]  # at most max_batch to a commit


async def test_a_failed_commit_fails_every_item_of_its_batch_and_not_the_next() -> None:
    recorder = Recorder(fail_on=2)
    recorder.release.clear()
    group = GroupCommit(recorder, max_batch=2)
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    doomed = [asyncio.create_task(group.submit(n)) for n in (1, 2)]
    survivor = asyncio.create_task(group.submit(3))
    recorder.release.set()

    assert await first == 0
    for task in doomed:
        with pytest.raises(RuntimeError, match="the commit failed"):
            await task
    assert await survivor == 6


async def test_an_item_refused_alone_fails_alone() -> None:
    recorder = Recorder(refuse=1)
    group = GroupCommit(recorder, max_batch=10)

    results = await asyncio.gather(*(group.submit(n) for n in range(3)), return_exceptions=True)

    assert results[0] == 0
    assert isinstance(results[1], ValueError)
    assert results[2] == 4


async def test_close_waits_for_the_batch_being_written_and_cancels_the_rest() -> None:
    recorder = Recorder()
    recorder.release.clear()
    group = GroupCommit(recorder, max_batch=1)
    written = asyncio.create_task(group.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    waiting = asyncio.create_task(group.submit(2))
    await asyncio.sleep(0)

    closing = asyncio.create_task(group.close())
    await asyncio.sleep(0)
    assert not closing.done()  # the batch being written is not abandoned mid-commit
    recorder.release.set()
    await closing

    assert await written == 2
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert recorder.batches == [[1]]
