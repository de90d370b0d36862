"""faust's Kafka consumer without a handful of asyncio tasks per message.

faust's fetch loop hands every record to the stream with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: the callback races a rebalance's
flow suspension. ``wait_first`` wraps both (plus the service's stopped and crashed events) in four tasks,
runs ``asyncio.wait`` and cancels the three losers — for every record, although the callback almost
always finishes at once (it puts the event in a buffer that has room). py-spy put this churn at roughly
a sixth of a worker's CPU.

For a chunked topic (``streams/chunks.py``) it hands each fetch's records to the agent as one chunk.

It also caps the wait for new records (see ``FETCH_WAIT_CAP_S``), and asks the broker to hold a fetch
until it has a batch's worth of records or ``fetch_max_wait_ms`` passed (see ``BatchingFetchThread``).

``EagerDrainConsumer`` runs the callback's first step in place. When it finishes there, nothing was
raced and no task is made (the loop still gets one pass per record); when it suspends (a full buffer,
flow control), the rest of it races the suspension exactly as before. Other ``wait_first`` calls are
untouched.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any

import aiokafka
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TP, Message
from mode import ServiceT
from mode.services import WaitArgT, WaitResults
from mode.utils.times import Seconds

from streams.chunks import ChunkConductor


class _Resumed:
    """Awaitable finishing a coroutine whose first step already ran and yielded ``pending``."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro, self._pending = coro, pending

    def __await__(self) -> Generator[Any, Any, Any]:
        value = self._pending
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                self._coro.close()
                raise
            except BaseException as exc:  # cancellation included: the coroutine decides what to do with it
                try:
                    value = self._coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    value = self._coro.send(sent)
                except StopIteration as done:
                    return done.value


class BatchingFetchThread(AIOKafkaConsumerThread):
    """faust's consumer thread, with the broker asked to hold each fetch for a batch's worth of records.

    faust leaves aiokafka's ``fetch_min_bytes=1``: under a steady load the broker answers every fetch as
    soon as one record is there, so the worker fetched, crossed to faust's consumer thread and back, and
    ran faust's ``getmany`` about once per record (a cProfile at 1,000 tx/s: 11,640 ``getmany`` calls for
    ~8,000 records). A fetch now waits for ``fetch_min_bytes`` or ``fetch_max_wait_ms``, whichever comes
    first; with a backlog it is answered at once, as before.
    """

    def _create_worker_consumer(self, transport: Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        if isinstance(transport, EagerDrainTransport):
            # aiokafka reads these when it starts its fetcher; faust passes no way to set them.
            consumer._fetch_min_bytes = transport.fetch_min_bytes
            consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        return consumer


class EagerDrainConsumer(Consumer):
    #: faust's fetch loop asks for records with a 1 s timeout, and after an idle spell the wait ran its
    #: full second although records had arrived: the first transactions after a pause were scored ~1 s
    #: late (measured in bench e2e, p99 at 1,000 tx/s offered 987 ms; 51 ms with the cap).
    FETCH_WAIT_CAP_S = 0.02

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return BatchingFetchThread(self, loop=self.loop, beacon=self.beacon)

    def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        return super().getmany(timeout=min(timeout, self.FETCH_WAIT_CAP_S))

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """faust's fetch loop, with the records of chunked topics collected per fetch and queued as one
        chunk each. Offsets, gaps and periodic commits are kept as faust keeps them; records of other
        topics still go one by one through faust's conductor."""
        conductor = self.app.topics
        if not isinstance(conductor, ChunkConductor) or not conductor.chunked_topics:
            await super()._drain_messages(fetcher)
            return
        try:
            await self._drain_chunks(fetcher, conductor)
        except self.consumer_stopped_errors:
            if not self.app.should_stop:
                raise
            self.log.info("Broker stopped consumer, shutting down...")
        except asyncio.CancelledError:
            if not self.app.should_stop:
                raise
            self.log.info("Consumer shutting down for user cancel.")
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _drain_chunks(self, fetcher: ServiceT, conductor: ChunkConductor) -> None:
        chunked, callback, read_offset = conductor.chunked_topics, self.callback, self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        while not (self._stopped.is_set() or fetcher._stopped.is_set()):  # type: ignore[attr-defined]
            self.diag.set_flag(CONSUMER_FETCHING)
            records = self.getmany(timeout=1.0)
            await self.sleep(0)
            if self.should_stop:
                continue
            chunks: dict[str, list[Message]] = {}
            async for tp, message in records:
                offset, last = message.offset, read_offset[tp]
                if last is not None and offset < last:
                    continue  # read before a seek back: already delivered
                if last and offset - last > 1 and acks_enabled_for(message.topic):
                    await self._add_gap(tp, last + 1, offset)  # compacted or transactional offsets
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
                if tp.topic in chunked:
                    chunks.setdefault(tp.topic, []).append(message)
                else:
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                read_offset[tp] = offset
            for topic, messages in chunks.items():
                await conductor.deliver_chunk(topic, messages, self.suspend_flow)
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def wait_first(self, *coros: WaitArgT, timeout: Seconds | None = None) -> WaitResults:
        first = coros[0] if coros else None
        if (
            timeout is None
            and len(coros) == 2
            and inspect.iscoroutine(first)
            and first.__name__ == "on_message"
            and not (self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set())
        ):
            try:
                pending = first.send(None)
            except StopIteration as done:
                _close(coros[1])
                # One pass of the event loop per record, as faust's tasks gave: without it the fetch loop
                # ran ahead of the stream, filled its buffer and the worker sat idle (measured: 7.4 s of
                # 9.9 s in select, half the throughput).
                await asyncio.sleep(0)
                return WaitResults([first], [done.value], False)
            except BaseException:
                _close(coros[1])
                raise
            return await super().wait_first(_Resumed(first, pending), coros[1])
        if timeout is None:
            return await super().wait_first(*coros)
        return await super().wait_first(*coros, timeout=timeout)


class EagerDrainTransport(Transport):
    """The aiokafka transport, with ``EagerDrainConsumer`` and ``ChunkConductor``; the fetch bounds are
    set by ``create_app``."""

    Consumer = EagerDrainConsumer
    Conductor = ChunkConductor
    fetch_min_bytes = 1  # aiokafka's default
    fetch_max_wait_ms = 1500  # faust's own value


def _close(waitable: WaitArgT) -> None:
    # An unawaited coroutine warns when collected; closing it first says it was dropped on purpose.
    if inspect.iscoroutine(waitable):
        waitable.close()
