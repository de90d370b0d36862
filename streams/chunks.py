"""Records of a fetch handed to an agent as one chunk, instead of one faust event per record.

faust delivers every record on its own: the fetch loop calls the conductor, which decodes it into an
event and queues it; the stream takes it off the queue, tracks it, runs its sensors and yields it after a
pass of the event loop; ``take`` buffers it; the agent acks it. py-spy put this machinery at about a third
of a saturated worker's CPU, although the worker only wants each fetch's records as a list.

For a *chunked* topic the consumer (``streams/consumer.py``) collects a fetch's records and the
conductor queues them as one ``Chunk`` on the topic's channel. The stream yields the chunk as a plain
value: the agent tracks its messages when it takes it (as faust's stream does with an event, so a chunk
cleared from the queue in a rebalance is never waited for; messages fetched before the latest rebalance
are dropped, as faust drops such events) and acks each message after its batch was published.
Everything else is faust's: the consumer group, offsets and commits, flow control during a rebalance
(the queue is cleared and the records fetched again from the committed offsets), the agent's
supervision.

A chunked topic has exactly one consuming agent: two would each ack the same messages, and the first
ack would let faust commit offsets the second has not finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from faust.transport.conductor import Conductor
from faust.types import AppT, Message


@dataclass(frozen=True, slots=True)
class Chunk:
    """The records of one fetch from one chunked topic, in fetch order (per partition: offset order)."""

    messages: list[Message]

    def take(self, app: AppT) -> list[Message]:
        """The messages to process, marked as taken: faust's graceful stop and rebalance wait for them to
        be acked. Messages fetched before the latest rebalance are dropped, as faust's stream drops such
        events: their partition may belong to another worker now, which reads them again from the
        committed offset, and applying a card's transactions from two workers at once could apply them
        out of order (measured: feature state differing from the offline engine's after a rebalance)."""
        generation = app.consumer_generation_id
        taken = [m for m in self.messages if m.generation_id == generation]
        unacked, on_message_in = app.consumer.unacked, app.sensors.on_message_in
        for message in taken:
            message.tracked = True
            unacked.add(message)
            on_message_in(message.tp, message.offset, message)
        return taken


def ack_messages(app: AppT, messages: Iterable[Message]) -> None:
    """Ack taken messages: their offsets become committable once every earlier offset is acked."""
    ack, on_message_out = app.consumer.ack, app.sensors.on_message_out
    for message in messages:
        if ack(message):
            on_message_out(message.tp, message.offset, message)


class ChunkConductor(Conductor):
    """faust's conductor, which also queues whole chunks on the channel of a chunked topic."""

    #: Chunks waiting in a channel before the consumer waits for the agent; a chunk holds at most a
    #: fetch (``broker_max_poll_records``), so this bounds the records buffered for the agent.
    max_queued_chunks = 8
    poll_s = 0.001

    def __init__(self, app: AppT, **kwargs: object) -> None:
        super().__init__(app, **kwargs)
        self.chunked_topics: set[str] = set()

    async def deliver_chunk(self, topic: str, messages: list[Message], suspend_flow: asyncio.Event) -> bool:
        """Queue ``messages`` for ``topic``'s agent; ``False`` when a rebalance suspended the flow first.

        A dropped chunk is fetched again: faust's fetch loop seeks back to the committed offsets when it
        next asks for records while the flow is suspended. So this must return at once when the flow is
        suspended, never wait for it to resume (faust's own delivery races the same way): a chunk put
        after the resume would skip that seek, and a chunk cleared from the queue at the revocation,
        before it, would never be read again (measured: one fetch's records lost in a rebalance).
        """
        if not await self._flow_open(suspend_flow):
            return False
        channels = self._topic_name_index.get(topic, set())
        if len(channels) != 1:
            msg = f"chunked topic {topic!r} needs exactly one consuming agent, found {len(channels)}"
            raise RuntimeError(msg)
        (channel,) = channels
        queue = channel.queue
        # Polled, not signalled: the wait only happens when the agent is saturated, and a 1 ms poll there
        # costs nothing measurable, where an event would need a hook in faust's stream on every take.
        while queue.qsize() >= self.max_queued_chunks:
            if suspend_flow.is_set() or self.should_stop:
                return False
            await asyncio.sleep(self.poll_s)
        if suspend_flow.is_set() or messages[0].generation_id != self.app.consumer_generation_id:
            return False  # fetched before a rebalance (see ``Chunk.take``)
        queue.put_nowait(Chunk(messages))
        return True

    async def _flow_open(self, suspend_flow: asyncio.Event) -> bool:
        """Wait for faust's flow control unless the consumer's flow is (or becomes) suspended."""
        flow_control = self.app.flow_control
        if suspend_flow.is_set():
            return False
        if flow_control.is_active():
            return True
        acquired = asyncio.ensure_future(flow_control.acquire())
        suspended = asyncio.ensure_future(suspend_flow.wait())
        try:
            await asyncio.wait((acquired, suspended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            acquired.cancel()
            suspended.cancel()
        return not suspend_flow.is_set()
