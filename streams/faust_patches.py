"""Every place where fraudstream reaches into faust's, mode's or aiokafka's internals, in one module.

faust's consumer path is built for one event per record; a fraud worker wants each fetch's records as a
list. The classes below subclass faust's and override private methods or read private attributes. They
are applied once, by ``install`` (``streams/app.py`` calls it), and only on the versions they were checked
against (``TESTED``): another version refuses to start with one line. ``tests/streams/test_faust_patches.py``
fails when the source of a patched original changes (``REVIEWED_SOURCES``).

The patches, why, and what they gave (figures from docs/benchmarks.md, measured in alternating runs):

1. ``EagerDrainConsumer.wait_first`` (mode's ``Service.wait_first``; recognises faust's per-record
   callback by its coroutine name ``on_message``, from ``Conductor._compile_message_handler``). faust's
   fetch loop raced every record's callback against a flow suspension with four tasks, ``asyncio.wait``
   and three cancellations; the callback now runs in place and races only when it suspends. Gain:
   86.7 → 42.1 µs of CPU per message (``bench/bench_reference.py``, faust no-work worker); worker CPU per
   transaction in ``bench e2e`` ~247 → 128–155 µs.
2. ``EagerDrainConsumer.getmany`` (faust's ``Consumer.getmany``): the wait for new records is capped at
   20 ms instead of faust's 1 s, which after an idle spell was waited in full although records had
   arrived. Gain: p99 at 1,000 tx/s 987 → 51 ms.
3. ``BatchingFetchThread`` (faust's ``AIOKafkaConsumerThread._create_worker_consumer``; aiokafka's private
   ``_fetch_min_bytes`` / ``_fetch_max_wait_ms``, read by ``AIOKafkaConsumer.start``): faust offers no
   setting for them and leaves ``fetch_min_bytes=1``, so the broker answered each fetch with one record.
   Gain at 2,500 tx/s: worker CPU per transaction 271 / 245 → 201 / 197 µs, p99 at 5,000 tx/s
   2,357 / 287 → 278 / 178 ms.
4. ``EagerDrainConsumer._drain_messages`` (faust's ``Consumer._drain_messages``, with its privates
   ``_read_offset``, ``_n_acked``, ``_commit_every``, ``_add_gap``), ``ChunkConductor`` (faust's
   ``Conductor``; its ``_topic_name_index``), ``Chunk.take`` / ``ack_messages`` (what faust's
   ``Stream._py_aiter`` and ``Stream.ack`` do per event): each fetch of the transactions topic reaches the
   agent as one chunk. Gain (three saturation pairs): worker CPU 84 / 101 / 85 → 67 / 70 / 67 µs per
   transaction, throughput 10,949 / 9,483 / 9,782 → 11,668 / 10,946 / 11,424 tx/s.
5. ``RawSchema`` (faust's ``Schema.compile``): the bytes are handed over without faust's codec registry.
   Gain: 3.36 → 1.68 µs to decode one record (micro-benchmark, best of 5 × 200,000).
6. ``drop_monitor_sensor`` (faust adds ``app.monitor`` in ``App.on_init_dependencies`` at every start):
   faust's Monitor sensor booked every event, ~15–20% of a no-work stream's CPU (a profile; not in
   docs/benchmarks.md). The worker exports its own metrics per micro-batch.
7. ``FetchHold`` (aiokafka's ``Fetcher._fetch_min_bytes``, read per request by
   ``Fetcher._get_actions_per_node``; faust's ``AIOKafkaConsumerThread._consumer``): patch 3's hold applies only
   while records arrive fast enough to fill it; under light load each fetch is answered with its first record.
   Measured (docs/benchmarks.md, "the adaptive fetch hold", an A/B on an overloaded box): saturation and p50
   at 10 % of capacity not worse; 11-32 % more worker CPU per transaction at 10 %; the ~5 ms it should save at
   low load on a quiet box is not measured yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiokafka
import faust
from aiokafka.consumer.fetcher import Fetcher
from faust.transport.conductor import Conductor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TP, AppT, Message
from mode import ServiceT
from mode.services import WaitArgT, WaitResults
from mode.utils.times import Seconds

from streams.errors import UntestedLibrary

TESTED = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}
"""The versions these patches were checked against; pinned in pyproject.toml."""


def check_versions(installed: Callable[[str], str] = importlib.metadata.version) -> None:
    """Raise ``UntestedLibrary`` (one line) unless faust, mode and aiokafka are the tested versions."""
    for distribution, tested in TESTED.items():
        found = installed(distribution)
        if found != tested:
            msg = (f"{distribution} {found} is installed but streams/faust_patches.py was checked against "
                   f"{tested} only: install {distribution}=={tested}, or re-check the patches and TESTED")
            raise UntestedLibrary(msg)


def install(app: faust.App, *, chunked_topics: Iterable[str], fetch_min_bytes: int, fetch_max_wait_ms: int,
            fetch_hold_min_records: int = 0) -> None:
    """Apply the patches to ``app``, once, before its topics are used: the transport (consumer, fetch
    bounds, conductor) and the topics delivered as chunks. Refuses an untested faust, mode or aiokafka."""
    check_versions()
    if isinstance(getattr(app, "_transport", None), EagerDrainTransport):
        msg = "the faust patches are already installed on this app"
        raise RuntimeError(msg)
    transport = EagerDrainTransport(app.conf.broker_consumer, app)
    transport.fetch_min_bytes = fetch_min_bytes
    transport.fetch_max_wait_ms = fetch_max_wait_ms
    transport.fetch_hold_min_records = fetch_hold_min_records
    app.transport = transport
    conductor = app.topics
    assert isinstance(conductor, ChunkConductor)  # the transport's
    conductor.chunked_topics.update(chunked_topics)


def drop_monitor_sensor(app: AppT) -> None:
    """Remove faust's Monitor sensor (patch 6). faust adds it when the app starts, so this runs after that:
    from a service the app starts (``WorkerRuntime.on_start``)."""
    with contextlib.suppress(KeyError):  # not added (yet), or already removed
        app.sensors.remove(app.monitor)


def patched_originals() -> dict[str, Callable[..., Any]]:
    """The library functions the patches override, copy or depend on the inside of, by name."""
    from faust.app.base import App
    from faust.serializers.schemas import Schema
    from faust.streams import Stream
    from faust.transport.consumer import Consumer as BaseConsumer
    from mode.services import Service

    return {
        "faust Consumer._drain_messages": BaseConsumer._drain_messages,
        "faust Consumer.getmany": BaseConsumer.getmany,
        "faust Consumer._add_gap": BaseConsumer._add_gap,
        "faust Consumer.ack": BaseConsumer.ack,
        "faust aiokafka Consumer._new_consumer_thread": Consumer._new_consumer_thread,
        "faust AIOKafkaConsumerThread._create_worker_consumer": AIOKafkaConsumerThread._create_worker_consumer,
        "faust Conductor._compile_message_handler": Conductor._compile_message_handler,
        "faust Conductor._update_indices": Conductor._update_indices,
        "faust Stream._py_aiter": Stream._py_aiter,
        "faust Stream._c_aiter": Stream._c_aiter,
        "faust Stream.ack": Stream.ack,
        "faust Schema.compile": Schema.compile,
        "faust App.on_init_dependencies": App.on_init_dependencies,
        "mode Service.wait_first": Service.wait_first,
        "aiokafka AIOKafkaConsumer.start": aiokafka.AIOKafkaConsumer.start,
        "aiokafka Fetcher._get_actions_per_node": Fetcher._get_actions_per_node,
    }


def patched_sources() -> dict[str, str]:
    """The source text of every patched original; faust's compiled stream iterator (which the worker's
    streams use when it is built, as here) by its ``.pyx``, shipped beside the extension."""
    sources = {name: inspect.getsource(original) for name, original in patched_originals().items()}
    from faust._cython import streams as cython_streams  # type: ignore[import-not-found,unused-ignore]

    pyx = Path(cython_streams.__file__).parent / "streams.pyx"
    sources["faust _cython StreamIterator (streams.pyx)"] = pyx.read_text()
    return sources


REVIEWED_SOURCES: dict[str, str] = {
    "faust Consumer._drain_messages": "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
    "faust Consumer.getmany": "4b168d84882a70d6e3e2f9804430a63b92f8fd117d3187cbb4aeb54305bda34e",
    "faust Consumer._add_gap": "4df2573ded7c1c2cde04dc6bde6d4480cb5875ef565256e56966b585ae39b1c1",
    "faust Consumer.ack": "5fcf41cf45153475de3790dc56fec1b83335956dc8b3bf7ff6bbb2b57627f03f",
    "faust aiokafka Consumer._new_consumer_thread": "0870ec53dea75083995e3565c0f0a25a1c63ecceaeb238e92e2585e3623af5a9",
    "faust AIOKafkaConsumerThread._create_worker_consumer": "c2701bfc3e6f6cad95c2be36d6a255a86e2c57d18d36cc1082b5fb5c482d99d7",  # noqa: E501
    "faust Conductor._compile_message_handler": "9fbc0538097aa4eca6113b99df8d17605ae72a6b5030482f041a183f4cc34df1",
    "faust Conductor._update_indices": "619b3247b96ac7d508b9b571e30fdaceb00378b77c79e4aee12a5d8ee3f41d34",
    "faust Stream._py_aiter": "3a48ee257a65435b482d51edb74f2993a67867949b1ef89b49fea893769e0614",
    "faust Stream._c_aiter": "fa44582a5882e9df5240199eabc475668bcd3c13b1816c45805dc746145b80bf",
    "faust Stream.ack": "32d7171a89b0931d806a87dc81dcba5673dd9702f8a6add8426e0e236b9e8fef",
    "faust Schema.compile": "d46eec5ce3195b2c6752cb860a10946cee66ddf6a955f2ea44ac1568c0ecb9ad",
    "faust App.on_init_dependencies": "7621a70a9b01f93f5d8ee7a909a2065402bd7c5458ffa7e338e51de5032624b2",
    "mode Service.wait_first": "feade6a31f8a67897cf687c54c66f5f4535288050bbaac07249ce2063d36ae2e",
    "aiokafka AIOKafkaConsumer.start": "2f1ba70443327538800d348e61042cdedd5a5e6306f40ebe1a06dddba7494c45",
    "aiokafka Fetcher._get_actions_per_node": "1dab2cf937d165d0eeacc8da8ed2b0ebd80b321bb6583757e01cdc1013d31635",
    "faust _cython StreamIterator (streams.pyx)": "0041622f4a251188f53d73e6d51d18d16f0f427512df1e96c043cfdeea4c3250",
}
"""sha256 of each patched original's source (``patched_sources``), as reviewed for ``TESTED``."""


# --- patch 4: chunks -------------------------------------------------------------------------------------
# For a *chunked* topic the consumer collects a fetch's records and the conductor queues them as one
# ``Chunk`` on the topic's channel. The stream yields the chunk as a plain value: the agent tracks its
# messages when it takes it (as faust's stream does with an event, so a chunk cleared from the queue in a
# rebalance is never waited for; messages fetched before the latest rebalance are dropped, as faust drops
# such events) and acks each message after its batch was published. Everything else is faust's: the
# consumer group, offsets and commits, flow control during a rebalance (the queue is cleared and the
# records fetched again from the committed offsets), the agent's supervision. A chunked topic has exactly
# one consuming agent: two would each ack the same messages, and the first ack would let faust commit
# offsets the second has not finished.


@dataclass(frozen=True, slots=True)
class Chunk:
    """The records of one fetch from one chunked topic, in fetch order (per partition: offset order)."""

    messages: list[Message]
    fetched_at: float = 0.0
    """Wall-clock time (``time.time()``, the clock of Kafka's timestamps) the fetch was handed over: where a
    record's ``fetch`` stage ends and its ``batch_wait`` begins (``schemas.scored.StageTimings``)."""

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
        fetched_at = time.time()
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
        queue.put_nowait(Chunk(messages, fetched_at))
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


# --- patches 1-4: the consumer -------------------------------------------------------------------------


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


class FetchHold:
    """Whether the broker may hold the worker's next fetch for more records: adaptive batching of fetches.

    A held fetch (patch 3: until ``min_bytes`` of records are there or ``max_wait_ms`` passed) saves the
    worker a fetch, a hand-over from faust's consumer thread and a micro-batch per few records under load;
    under light load it only delays: a lone transaction waited the whole 10 ms for bytes that never came.
    So the next fetch is held only while records arrive fast enough to bring ``hold_min_records`` within the
    hold: the rate over the last ``window_s``, or one fetch that returned that many at once (a backlog, a
    burst). Otherwise the broker answers as soon as one record is there. ``hold_min_records=0``: always held.
    """

    window_s = 0.05

    def __init__(self, *, min_bytes: int, max_wait_ms: int, hold_min_records: int) -> None:
        self.min_bytes, self.max_wait_s, self.hold_min_records = min_bytes, max_wait_ms / 1000, hold_min_records
        self.holding = True
        self._records = 0
        self._since = time.monotonic()

    @property
    def next_min_bytes(self) -> int:
        return self.min_bytes if self.holding else 1

    def after_fetch(self, records: int, now: float | None = None) -> bool:
        """Count one fetch's records; True when ``next_min_bytes`` changed."""
        if self.hold_min_records <= 0:
            return False
        now = time.monotonic() if now is None else now
        self._records += records
        elapsed = now - self._since
        if records >= self.hold_min_records:
            holding = True
        elif elapsed >= self.window_s:
            holding = self._records / elapsed * self.max_wait_s >= self.hold_min_records
        else:
            return False
        self._records, self._since = 0, now
        changed, self.holding = holding != self.holding, holding
        return changed


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
        transport = self.transport
        hold = FetchHold(min_bytes=getattr(transport, "fetch_min_bytes", 1),
                         max_wait_ms=getattr(transport, "fetch_max_wait_ms", 0),
                         hold_min_records=getattr(transport, "fetch_hold_min_records", 0))
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
            if hold.after_fetch(sum(len(messages) for messages in chunks.values())):
                self._set_fetch_min_bytes(hold.next_min_bytes)
            for topic, messages in chunks.items():
                await conductor.deliver_chunk(topic, messages, self.suspend_flow)
            self.diag.unset_flag(CONSUMER_FETCHING)

    def _set_fetch_min_bytes(self, min_bytes: int) -> None:
        """The next fetch requests' ``fetch_min_bytes``: aiokafka's fetcher (in faust's consumer thread) reads
        it each time it builds a request; an int assigned from here is seen there whole."""
        consumer = getattr(self._thread, "_consumer", None)
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is not None:
            fetcher._fetch_min_bytes = min_bytes

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
    fetch_hold_min_records = 0  # always held (patch 7 off)


def _close(waitable: WaitArgT) -> None:
    # An unawaited coroutine warns when collected; closing it first says it was dropped on purpose.
    if inspect.iscoroutine(waitable):
        waitable.close()


# --- patch 5: raw records ------------------------------------------------------------------------------


class RawSchema(faust.Schema[bytes, bytes]):
    def __init__(self) -> None:
        super().__init__(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def compile(self, app: AppT, **_: Any) -> Any:
        create_event = app.create_event

        async def decode(message: Message, *, propagate: bool = False) -> Any:
            return create_event(message.key, message.value, message.headers, message)

        return decode
