"""EagerDrainConsumer keeps faust's race between a record's callback and a flow suspension, and skips the
tasks when the callback finishes at once. The consumer is built by faust but never started: only
``wait_first`` runs, on this test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest
from faust.transport.consumer import Consumer
from mode.services import Service

from streams.faust_patches import BatchingFetchThread, EagerDrainConsumer, EagerDrainTransport


@pytest.fixture
async def consumer() -> AsyncIterator[EagerDrainConsumer]:
    app = faust.App("eager-drain-test", broker="kafka://127.0.0.1:1", env={})
    app.transport = EagerDrainTransport(app.conf.broker_consumer, app)
    made = app.consumer  # built as the worker builds it, never started
    assert isinstance(made, EagerDrainConsumer)
    yield made


def _count_slow_path(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = Service.wait_first

    async def counting(self: Service, *coros: Any, **kwargs: Any) -> Any:
        calls.append(len(coros))
        return await original(self, *coros, **kwargs)

    monkeypatch.setattr(Service, "wait_first", counting)
    return calls


async def test_a_callback_that_finishes_at_once_needs_no_race(
    consumer: EagerDrainConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = _count_slow_path(monkeypatch)

    async def on_message() -> str:
        return "buffered"

    result = await consumer.wait_first(on_message(), consumer.suspend_flow.wait())
    assert result.done and result.results == ["buffered"] and not result.stopped
    assert slow == []


async def test_a_callback_that_suspends_finishes_through_the_race(
    consumer: EagerDrainConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = _count_slow_path(monkeypatch)
    room = asyncio.Event()

    async def on_message() -> str:
        await room.wait()  # a full buffer
        await asyncio.sleep(0)
        return "buffered later"

    asyncio.get_running_loop().call_later(0.05, room.set)
    result = await consumer.wait_first(on_message(), consumer.suspend_flow.wait())
    assert result.results == ["buffered later"]
    assert slow == [2]


async def test_a_flow_suspension_still_wins_over_a_blocked_callback(consumer: EagerDrainConsumer) -> None:
    cancelled = asyncio.Event()

    async def on_message() -> None:
        try:
            await asyncio.Event().wait()  # never gets room
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.get_running_loop().call_later(0.05, consumer.suspend_flow.set)
    suspended = consumer.suspend_flow.wait()
    result = await asyncio.wait_for(consumer.wait_first(on_message(), suspended), 5)
    assert result.done == [suspended] and result.results == [True]
    await asyncio.wait_for(cancelled.wait(), 5)  # the losing callback was cancelled, as faust does


async def test_errors_in_the_callback_propagate(consumer: EagerDrainConsumer) -> None:
    async def fails_at_once() -> None:
        raise ValueError("bad record")

    async def fails_later() -> None:
        await asyncio.sleep(0.01)
        raise KeyError("later")

    with pytest.raises(ValueError, match="bad record"):
        await consumer.wait_first(fails_at_once(), consumer.suspend_flow.wait())
    with pytest.raises(KeyError, match="later"):
        await consumer.wait_first(fails_later(), consumer.suspend_flow.wait())


async def test_while_suspended_faust_decides(consumer: EagerDrainConsumer, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = _count_slow_path(monkeypatch)
    consumer.suspend_flow.set()

    async def on_message() -> str:
        return "x"

    await consumer.wait_first(on_message(), consumer.suspend_flow.wait())
    assert slow == [2]


def test_the_wait_for_new_records_is_capped(consumer: EagerDrainConsumer, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[float] = []

    def recording(self: Any, timeout: float) -> Any:
        asked.append(timeout)
        return iter(())

    monkeypatch.setattr(Consumer, "getmany", recording)
    consumer.getmany(timeout=1.0)  # what faust's fetch loop asks for
    consumer.getmany(timeout=0.001)
    assert asked == [EagerDrainConsumer.FETCH_WAIT_CAP_S, 0.001]


async def test_the_worker_consumer_asks_the_broker_to_hold_fetches(consumer: EagerDrainConsumer) -> None:
    transport = consumer.transport
    assert isinstance(transport, EagerDrainTransport)
    transport.fetch_min_bytes, transport.fetch_max_wait_ms = 65_536, 10
    thread = consumer._new_consumer_thread()
    assert isinstance(thread, BatchingFetchThread)
    made = thread._create_worker_consumer(transport)  # built, never started: no broker needed
    assert (made._fetch_min_bytes, made._fetch_max_wait_ms) == (65_536, 10)
