"""The faust application: two thin agents over ``transactions`` and ``fraud-labels``.

``transactions`` is a chunked topic (``streams/chunks.py``): its agent gets each fetch's records as one
chunk. The labels agent batches with ``noack_take``. Both ack only after their batch was handled
(published and acknowledged), because faust's ``take`` acks in a ``finally`` even when the batch failed.
An unexpected error stops the worker process without acking, so the batch is redelivered to the next
worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import faust

from config.settings import Settings
from streams.chunks import Chunk, ChunkConductor, ack_messages
from streams.consumer import EagerDrainTransport
from streams.flow import BatchFlow
from streams.messages import InboundMessage
from streams.pipeline import CheckedMessage, PreparedBatch, TransactionPipeline
from streams.runtime import WorkerRuntime
from streams.schema import RawSchema

log = logging.getLogger(__name__)
EXIT_UNEXPECTED = 70
CONSUMER_LAG_INTERVAL_S = 5.0
T = TypeVar("T")


def inbound(events: Any) -> list[InboundMessage]:
    return [event.message for event in events]  # faust's Message is an InboundMessage (streams/messages.py)


async def _or_exit(start: Awaitable[T], what: str) -> T:
    """A worker that cannot build its pipeline (bad model, feature list mismatch, bug) must not sit in the
    consumer group holding partitions without processing them: it exits, and says why."""
    try:
        return await start
    except Exception:
        log.critical("%s failed; the worker stops", what, exc_info=True)
        os._exit(EXIT_UNEXPECTED)


def _die(what: str) -> NoReturn:
    log.critical("%s; stopping the worker without acking the batch", what, exc_info=True)
    os._exit(EXIT_UNEXPECTED)


async def _start(pipeline: TransactionPipeline, items: list[CheckedMessage]) -> PreparedBatch:
    try:
        return await pipeline.start(items)
    except Exception:
        _die("unexpected error sending a batch to the feature state")


async def _complete(pipeline: TransactionPipeline, batch: PreparedBatch) -> PreparedBatch:
    try:
        return await pipeline.complete(batch)
    except Exception:
        _die("unexpected error reading a batch's features")


async def _finish(pipeline: TransactionPipeline, app: faust.App, runtime: WorkerRuntime, batch: PreparedBatch,
                  items: list[CheckedMessage]) -> None:
    try:
        outcome = await pipeline.finish(batch)
    except Exception:
        _die("unexpected error scoring or publishing a batch")
    # only after the broker acknowledged the batch's records; the messages are faust's (streams/chunks.py)
    ack_messages(app, [item.message for item in items])  # type: ignore[misc]
    await runtime.after_batch(outcome)


def _faust_home(settings: Settings) -> Path:
    path = settings.home / "faust"
    path.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    return path


def faust_leftovers(settings: Settings) -> tuple[str, Path]:
    """What faust creates for the app id and never removes: its leader-election topic and its (unused) table
    directory. Whoever starts workers under throw-away app ids (benchmarks) deletes both afterwards."""
    return f"{settings.app_id}-__assignor-__leader", _faust_home(settings) / f"{settings.app_id}-data"


def create_app(settings: Settings, runtime: WorkerRuntime) -> faust.App:
    app = faust.App(
        settings.app_id,
        # faust would otherwise let unprefixed variables (PRODUCER_ACKS, BROKER_URL, ...) silently override
        # these settings; fraudstream's configuration is its own Settings object only.
        env={},
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker=settings.kafka.faust_broker,
        broker_credentials=settings.kafka.faust_credentials(),  # TLS / SASL: config/kafka.py
        value_serializer="raw",
        key_serializer="raw",
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        topic_replication_factor=1,
        topic_partitions=settings.transactions_partitions,
        producer_acks=-1,
        producer_linger_ms=1,
        producer_max_batch_size=512 * 1024,
        broker_commit_every=max(1000, settings.batch_max_size * 4),
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4096, settings.batch_max_size * settings.max_batches_in_flight),
        broker_max_poll_records=max(500, settings.batch_max_size),
        web_enabled=False,
        table_standby_replicas=0,
        # faust creates its (here unused) table directory at start: in the home, not the cwd
        datadir=str(faust_leftovers(settings)[1]),
    )
    transport = EagerDrainTransport(app.conf.broker_consumer, app)  # see streams/consumer.py
    transport.fetch_min_bytes = settings.kafka_fetch_min_bytes
    transport.fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
    app.transport = transport
    runtime.bind(app)
    transactions = app.topic(settings.topics.transactions, schema=RawSchema())
    conductor = app.topics
    assert isinstance(conductor, ChunkConductor)  # the transport's (streams/consumer.py)
    conductor.chunked_topics.add(settings.topics.transactions)
    labels = app.topic(settings.topics.labels, schema=RawSchema())
    within = settings.batch_max_wait_ms / 1000.0

    @app.agent(transactions, name="score-transactions")
    async def score_transactions(stream: Any) -> None:  # faust.Stream; its stubs lack noack
        pipeline = await _or_exit(runtime.pipeline(), "building the scoring pipeline")
        # The agent hands each chunk to the flow and takes the next at once (see streams/flow.py), which
        # merges the chunks that arrive while the pipeline is busy. Features are applied in order, records
        # are published in order, and messages are acked only after the broker acknowledged their records.
        flow: BatchFlow[CheckedMessage, PreparedBatch, PreparedBatch] = BatchFlow(
            partial(_start, pipeline), partial(_complete, pipeline), partial(_finish, pipeline, app, runtime),
            max_batch=settings.batch_max_size, max_finishing=settings.max_batches_in_flight,
            max_pending=settings.batch_max_size * settings.max_batches_in_flight,
        )
        try:
            async for chunk in stream.noack():
                if not isinstance(chunk, Chunk):
                    _die(f"the transactions agent got {type(chunk).__name__}, not a chunk")
                taken = chunk.take(app)
                if not taken:
                    continue
                try:
                    checked = pipeline.check(taken)
                except Exception:
                    _die("unexpected error validating a batch")
                await flow.submit(checked)
        finally:
            await flow.drain()

    @app.timer(interval=CONSUMER_LAG_INTERVAL_S)  # type: ignore[untyped-decorator]  # faust's stubs
    async def consumer_lag() -> None:
        await runtime.update_consumer_lag()

    @app.agent(labels, name="apply-labels")
    async def apply_labels(stream: Any) -> None:
        handler = await _or_exit(runtime.label_handler(), "building the label handler")
        async for events in stream.noack_take(max(64, settings.batch_max_size), within=within * 10):
            try:
                await handler.handle(inbound(events))
            except Exception:
                log.critical("unexpected error applying labels; stopping the worker", exc_info=True)
                os._exit(EXIT_UNEXPECTED)
            for event in events:
                await stream.ack(event)

    return app
