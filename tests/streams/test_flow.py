"""BatchFlow: order of both stages, merging while busy, bounded finishing, backpressure, drain."""

from __future__ import annotations

import asyncio

import pytest

from streams.flow import BatchFlow


class Stages:
    """Prepare and finish that record what they saw; each stage can be held by a test."""

    def __init__(self) -> None:
        self.prepared: list[list[int]] = []
        self.finished: list[list[int]] = []
        self.prepare_gate = asyncio.Event()
        self.finish_gate = asyncio.Event()
        self.prepare_gate.set()
        self.finish_gate.set()
        self.finishing_now = 0
        self.most_finishing = 0

    async def prepare(self, events: list[int]) -> list[int]:
        await self.prepare_gate.wait()
        self.prepared.append(list(events))
        return [e * 10 for e in events]

    async def finish(self, prepared: list[int], events: list[int]) -> None:
        assert prepared == [e * 10 for e in events]
        self.finishing_now += 1
        self.most_finishing = max(self.most_finishing, self.finishing_now)
        await self.finish_gate.wait()
        await asyncio.sleep(0.001 * (len(self.finished) % 3))  # uneven finishing times must not reorder
        self.finished.append(list(events))
        self.finishing_now -= 1


def flow(
    stages: Stages, *, max_batch: int = 4, max_pending: int = 8, max_finishing: int = 2
) -> BatchFlow[int, list[int]]:
    return BatchFlow(stages.prepare, stages.finish, max_batch=max_batch, max_pending=max_pending,
                     max_finishing=max_finishing)


async def test_events_are_prepared_and_finished_once_in_submission_order() -> None:
    stages = Stages()
    f = flow(stages)
    for start in range(0, 40, 3):
        await f.submit(list(range(start, min(start + 3, 40))))
        await asyncio.sleep(0)
    await f.drain()
    assert [e for batch in stages.prepared for e in batch] == list(range(40))
    assert stages.finished == stages.prepared
    assert all(len(batch) <= 4 for batch in stages.prepared)


async def test_what_queues_while_preparing_is_merged_into_the_next_batch() -> None:
    stages = Stages()
    f = flow(stages, max_batch=100, max_pending=100)
    stages.prepare_gate.clear()
    await f.submit([0])
    await asyncio.sleep(0)  # the driver took [0] and waits in prepare
    for e in range(1, 6):
        await f.submit([e])
    stages.prepare_gate.set()
    await f.drain()
    assert stages.prepared == [[0], [1, 2, 3, 4, 5]]
    assert f.batches == 2


async def test_at_most_max_finishing_batches_finish_at_once() -> None:
    stages = Stages()
    f = flow(stages, max_batch=1, max_pending=100, max_finishing=2)
    stages.finish_gate.clear()
    await f.submit(list(range(6)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert stages.finishing_now <= 2
    assert len(stages.prepared) == 3  # two finishing, the driver holds the third until one is done
    stages.finish_gate.set()
    await f.drain()
    assert stages.most_finishing <= 2
    assert stages.finished == [[e] for e in range(6)]


async def test_submit_waits_while_too_many_events_are_queued() -> None:
    stages = Stages()
    f = flow(stages, max_batch=2, max_pending=4)
    stages.prepare_gate.clear()
    await f.submit([0, 1])
    await asyncio.sleep(0)  # taken by the driver, held in prepare
    await f.submit([2, 3, 4, 5])  # 4 queued: not more than max_pending, returns
    blocked = asyncio.ensure_future(f.submit([6]))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not blocked.done()
    assert f.pending == 5
    stages.prepare_gate.set()
    await asyncio.wait_for(blocked, 1)
    await f.drain()
    assert [e for batch in stages.finished for e in batch] == list(range(7))


async def test_a_failing_prepare_reaches_drain() -> None:
    async def prepare(events: list[int]) -> list[int]:
        raise RuntimeError("boom")

    async def finish(prepared: list[int], events: list[int]) -> None:
        raise AssertionError("never finished")

    f: BatchFlow[int, list[int]] = BatchFlow(prepare, finish, max_batch=2, max_pending=4, max_finishing=1)
    await f.submit([1])
    with pytest.raises(RuntimeError, match="boom"):
        await f.drain()


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        BatchFlow(Stages().prepare, Stages().finish, max_batch=8, max_pending=4, max_finishing=1)
