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

from streams.faust_patches import Chunk, ChunkConductor, EagerDrainTransport, ack_messages

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


def _messages(partition: int, offsets: range, generation: int = 0) -> list[Message]:
    return [Message(TOPIC, partition, offset, 0.0, 0, None, b"k", b"v", None, tp=TP(TOPIC, partition),
                    generation_id=generation) for offset in offsets]


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

    assert Chunk(messages).take(app) == messages
    assert set(messages) <= set(consumer.unacked)

    ack_messages(app, messages)
    assert not set(messages) & set(consumer.unacked)
    assert all(message.acked for message in messages)


async def test_a_suspended_flow_drops_the_chunk_at_once(app: faust.App) -> None:
    conductor, (channel,) = await _subscribe(app)
    app.flow_control.suspend()  # a rebalance: faust stops the consumer's flow, then its flow control
    suspend = asyncio.Event()
    suspend.set()

    # Returning at once (not when the flow resumes) lets faust's fetch loop ask for records while the
    # flow is suspended, which is when it seeks back to the committed offsets and so reads this again.
    delivered = await asyncio.wait_for(conductor.deliver_chunk(TOPIC, _messages(0, range(3)), suspend), 0.5)
    assert delivered is False
    assert channel.queue.qsize() == 0


async def test_delivery_waiting_for_flow_control_gives_up_when_the_flow_is_suspended(app: faust.App) -> None:
    conductor, (channel,) = await _subscribe(app)
    app.flow_control.suspend()
    suspend = asyncio.Event()

    waiting = asyncio.ensure_future(conductor.deliver_chunk(TOPIC, _messages(0, range(3)), suspend))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    suspend.set()
    assert await asyncio.wait_for(waiting, 0.5) is False
    assert channel.queue.qsize() == 0


async def test_delivery_waiting_for_flow_control_goes_on_when_it_resumes(app: faust.App) -> None:
    conductor, (channel,) = await _subscribe(app)
    app.flow_control.suspend()

    waiting = asyncio.ensure_future(conductor.deliver_chunk(TOPIC, _messages(0, range(3)), asyncio.Event()))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    app.flow_control.resume()
    assert await asyncio.wait_for(waiting, 0.5) is True
    assert channel.queue.qsize() == 1


async def test_messages_fetched_before_the_latest_rebalance_are_dropped(app: faust.App) -> None:
    conductor, (channel,) = await _subscribe(app)
    app.consumer_generation_id = 2
    stale, fresh = _messages(0, range(3), generation=1), _messages(1, range(2), generation=2)

    # their partition may belong to another worker now: it reads them again from the committed offset
    assert await conductor.deliver_chunk(TOPIC, stale, asyncio.Event()) is False
    assert channel.queue.qsize() == 0
    assert Chunk(stale + fresh).take(app) == fresh  # queued before the rebalance, taken after it
    assert not set(stale) & set(app.consumer.unacked)
