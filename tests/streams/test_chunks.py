"""ChunkConductor queues a fetch's records as one chunk on the chunked topic's only channel, waits while the
agent is behind, gives up when a rebalance suspends the flow, and refuses a second consuming agent. The
app is built as the worker builds it, never started: no broker is needed for the conductor's queueing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import faust
import pytest
from faust.types import TP, Message, TopicT

from streams.chunks import Chunk, ChunkConductor, ack_messages
from streams.consumer import EagerDrainTransport

TOPIC = "chunked-tx"


@pytest.fixture
async def app() -> AsyncIterator[faust.App]:
    made = faust.App("chunks-test", broker="kafka://127.0.0.1:1", env={})
    made.transport = EagerDrainTransport(made.conf.broker_consumer, made)
    made.flow_control.resume()  # as after a partition assignment; suspended, delivery waits (faust's rule)
    yield made


async def _subscribe(app: faust.App, agents: int = 1) -> tuple[ChunkConductor, list[Any]]:
    conductor = app.topics
    assert isinstance(conductor, ChunkConductor)
    conductor.chunked_topics.add(TOPIC)
    channels = [cast(TopicT, app.topic(TOPIC).clone(is_iterator=True)) for _ in range(agents)]
    for channel in channels:
        conductor.add(channel)
    await conductor._update_indices()
    return conductor, channels


def _messages(partition: int, offsets: range) -> list[Message]:
    return [Message(TOPIC, partition, offset, 0.0, 0, None, b"k", b"v", None, tp=TP(TOPIC, partition))
            for offset in offsets]


async def test_a_fetch_becomes_one_chunk_in_order(app: faust.App) -> None:
    conductor, (channel,) = await _subscribe(app)
    messages = _messages(0, range(5)) + _messages(1, range(3))

    assert await conductor.deliver_chunk(TOPIC, messages, asyncio.Event())

    assert channel.queue.qsize() == 1
    chunk = channel.queue.get_nowait()
    assert isinstance(chunk, Chunk)
    assert chunk.messages == messages


async def test_delivery_waits_while_the_agent_is_behind(app: faust.App) -> None:
    conductor, (channel,) = await _subscribe(app)
    conductor.poll_s = 0.0005
    for offset in range(conductor.max_queued_chunks):
        assert await conductor.deliver_chunk(TOPIC, _messages(0, range(offset, offset + 1)), asyncio.Event())

    late = asyncio.ensure_future(conductor.deliver_chunk(TOPIC, _messages(0, range(99, 100)), asyncio.Event()))
    await asyncio.sleep(0.01)
    assert not late.done()
    assert channel.queue.qsize() == conductor.max_queued_chunks

    channel.queue.get_nowait()  # the agent takes one chunk
    assert await asyncio.wait_for(late, timeout=1.0)
    assert channel.queue.qsize() == conductor.max_queued_chunks


async def test_a_suspended_flow_drops_a_waiting_chunk(app: faust.App) -> None:
    conductor, (channel,) = await _subscribe(app)
    conductor.poll_s = 0.0005
    for offset in range(conductor.max_queued_chunks):
        await conductor.deliver_chunk(TOPIC, _messages(0, range(offset, offset + 1)), asyncio.Event())
    suspend = asyncio.Event()

    late = asyncio.ensure_future(conductor.deliver_chunk(TOPIC, _messages(0, range(99, 100)), suspend))
    await asyncio.sleep(0.01)
    suspend.set()  # a rebalance: faust clears the queues and fetches again from the committed offsets

    assert await asyncio.wait_for(late, timeout=1.0) is False
    assert channel.queue.qsize() == conductor.max_queued_chunks


async def test_a_second_consuming_agent_is_refused(app: faust.App) -> None:
    conductor, _ = await _subscribe(app, agents=2)

    with pytest.raises(RuntimeError, match="exactly one consuming agent, found 2"):
        await conductor.deliver_chunk(TOPIC, _messages(0, range(1)), asyncio.Event())


async def test_taken_messages_are_unacked_until_acked(app: faust.App) -> None:
    await _subscribe(app)
    consumer = app.consumer
    messages = _messages(0, range(3))

    Chunk(messages).track(app)
    assert set(messages) <= set(consumer.unacked)

    ack_messages(app, messages)
    assert not set(messages) & set(consumer.unacked)
    assert all(message.acked for message in messages)
