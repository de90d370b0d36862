"""BatchFlow: order of every stage, overlapped preparing, merging while busy, bounded finishing,
backpressure, drain."""

from __future__ import annotations

import asyncio

import pytest

from streams.flow import BatchFlow


class Stages:
    """Start, complete (the gated "prepare") and finish that record what they saw; a test can hold
    complete and finish."""

    def __init__(self) -> None:
        self.started: list[list[int]] = []
        self.prepared: list[list[int]] = []
        self.finished: list[list[int]] = []
        self.prepare_gate = asyncio.Event()
        self.finish_gate = asyncio.Event()
        self.prepare_gate.set()
        self.finish_gate.set()
        self.finishing_now = 0
        self.most_finishing = 0

    async def start(self, events: list[int]) -> list[int]:
        self.started.append(list(events))
        return list(events)

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
    stages: Stages, *, max_batch: int = 4, max_pending: int = 8, max_preparing: int = 2, max_finishing: int = 2
) -> BatchFlow[int, list[int], list[int]]:
    return BatchFlow(stages.start, stages.prepare, stages.finish, max_batch=max_batch, max_pending=max_pending,
                     max_preparing=max_preparing, max_finishing=max_finishing)


async def test_events_are_prepared_and_finished_once_in_submission_order() -> None:
    stages = Stages()
    f = flow(stages)
    for start in range(0, 40, 3):
        await f.submit(list(range(start, min(start + 3, 40))))
        await asyncio.sleep(0)
    await f.drain()
    assert [e for batch in stages.prepared for e in batch] == list(range(40))
    assert stages.started == stages.prepared
    assert stages.finished == stages.prepared
    assert all(len(batch) <= 4 for batch in stages.prepared)


async def test_what_queues_while_preparing_is_merged_into_the_next_batch() -> None:
    stages = Stages()
    f = flow(stages, max_batch=100, max_pending=100, max_preparing=1)
    stages.prepare_gate.clear()
    await f.submit([0])
    await asyncio.sleep(0)  # the driver took [0] and waits in prepare
    for e in range(1, 6):
        await f.submit([e])
    stages.prepare_gate.set()
    await f.drain()
    assert stages.prepared == [[0], [1, 2, 3, 4, 5]]
    assert f.batches == 2


async def test_the_next_batch_starts_while_one_completes_and_completes_after_it() -> None:
    stages = Stages()
    f = flow(stages, max_batch=100, max_pending=100, max_preparing=2)
    stages.prepare_gate.clear()
    await f.submit([0])
    await asyncio.sleep(0)  # [0] started, held in complete
    await f.submit([1])
    for _ in range(5):
        await asyncio.sleep(0)
    assert stages.started == [[0], [1]]  # [1] did not wait for [0]'s features
    assert stages.prepared == []
    for e in range(2, 6):
        await f.submit([e])  # no room for a third: these queue and merge
    for _ in range(5):
        await asyncio.sleep(0)
    assert stages.started == [[0], [1]]
    stages.prepare_gate.set()
    await f.drain()
    assert stages.started == [[0], [1], [2, 3, 4, 5]]
    assert stages.prepared == stages.started
    assert stages.finished == stages.started


async def test_a_faster_complete_still_waits_for_the_batch_before() -> None:
    order: list[str] = []
    first_gate = asyncio.Event()

    async def start(events: list[int]) -> list[int]:
        return events

    async def complete(events: list[int]) -> list[int]:
        if events == [0]:
            await first_gate.wait()
        order.append(f"complete {events}")
        return events

    async def finish(prepared: list[int], events: list[int]) -> None:
        order.append(f"finish {events}")

    f: BatchFlow[int, list[int], list[int]] = BatchFlow(
        start, complete, finish, max_batch=1, max_pending=4, max_preparing=2, max_finishing=2
    )
    await f.submit([0, 1])
    for _ in range(10):
        await asyncio.sleep(0)
    assert order == []  # [1] is started but completes only after [0]
    first_gate.set()
    await f.drain()
    assert [o for o in order if o.startswith("complete")] == ["complete [0]", "complete [1]"]
    assert [o for o in order if o.startswith("finish")] == ["finish [0]", "finish [1]"]


async def test_at_most_max_finishing_batches_finish_at_once() -> None:
    stages = Stages()
    f = flow(stages, max_batch=1, max_pending=100, max_finishing=2)
    stages.finish_gate.clear()
    await f.submit(list(range(6)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert stages.finishing_now <= 2
    # two finishing, the third prepared and held by the driver until one is done; the fourth was started
    # behind it but the driver, waiting for a finishing slot, starts no more
    assert len(stages.prepared) == 4
    assert len(stages.started) == 4
    stages.finish_gate.set()
    await f.drain()
    assert stages.most_finishing <= 2
    assert stages.finished == [[e] for e in range(6)]


async def test_submit_waits_while_too_many_events_are_queued() -> None:
    stages = Stages()
    f = flow(stages, max_batch=2, max_pending=4, max_preparing=1)
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

    async def start(events: list[int]) -> list[int]:
        return events

    f: BatchFlow[int, list[int], list[int]] = BatchFlow(
        start, prepare, finish, max_batch=2, max_pending=4, max_finishing=1
    )
    await f.submit([1])
    with pytest.raises(RuntimeError, match="boom"):
        await f.drain()


async def test_a_driver_that_failed_before_drain_is_reported_by_drain() -> None:
    async def start(events: list[int]) -> list[int]:
        raise RuntimeError("start failed")

    f: BatchFlow[int, list[int], list[int]] = BatchFlow(
        start, Stages().prepare, Stages().finish, max_batch=2, max_pending=4, max_finishing=1
    )
    await f.submit([1])
    for _ in range(5):
        await asyncio.sleep(0)  # the driver fails and ends before anyone drains
    assert isinstance(f.failure, RuntimeError)
    with pytest.raises(RuntimeError, match="start failed"):
        await f.drain()


async def test_abandon_cancels_what_is_in_flight_and_finishes_nothing_more() -> None:
    stages = Stages()
    stages.finish_gate.clear()  # a publish that hangs
    f = flow(stages)
    await f.submit([1, 2, 3, 4, 5, 6])
    for _ in range(10):
        await asyncio.sleep(0)
    assert stages.finishing_now == 1
    await f.abandon()
    stages.finish_gate.set()
    await asyncio.sleep(0.01)
    assert stages.finished == []
    await f.drain()  # nothing left to wait for


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        BatchFlow(Stages().start, Stages().prepare, Stages().finish, max_batch=8, max_pending=4, max_finishing=1)
