"""The faust application: two thin agents over ``transactions`` and ``fraud-labels``.

Agents batch with ``noack_take`` and ack a batch only after ``handle`` returned (published and
acknowledged), because faust's ``take`` acks in a ``finally`` even when the batch failed. An unexpected
error stops the worker process without acking, so the batch is redelivered to the next worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections import deque
from collections.abc import Awaitable
from typing import Any, NoReturn, TypeVar

import faust

from fraudstream.settings import Settings
from streams.consumer import EagerDrainTransport
from streams.messages import InboundMessage
from streams.pipeline import PreparedBatch, TransactionPipeline
from streams.runtime import WorkerRuntime

log = logging.getLogger(__name__)
EXIT_UNEXPECTED = 70
T = TypeVar("T")


def _credentials(settings: Settings) -> Any:
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    if settings.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username, password=password, mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context if settings.kafka_security_protocol == "SASL_SSL" else None,
    )


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


async def _prepare_after(
    previous: asyncio.Task[PreparedBatch] | None, pipeline: TransactionPipeline, events: list[Any]
) -> PreparedBatch:
    if previous is not None:
        await previous  # feature state is applied in batch order
    try:
        return await pipeline.prepare(inbound(events))
    except Exception:
        _die("unexpected error preparing a batch")


async def _finish_after(
    previous: asyncio.Task[None] | None, prepared: asyncio.Task[PreparedBatch], pipeline: TransactionPipeline,
    stream: Any, runtime: WorkerRuntime, events: list[Any],
) -> None:
    batch = await prepared
    if previous is not None:
        await previous  # records are published in batch order
    try:
        outcome = await pipeline.finish(batch)
    except Exception:
        _die("unexpected error scoring or publishing a batch")
    for event in events:
        await stream.ack(event)
    await runtime.after_batch(outcome)


def create_app(settings: Settings, runtime: WorkerRuntime) -> faust.App:
    app = faust.App(
        settings.app_id,
        # faust would otherwise let unprefixed variables (PRODUCER_ACKS, BROKER_URL, ...) silently override
        # these settings; fraudstream's configuration is its own Settings object only.
        env={},
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=_credentials(settings),
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
    )
    app.transport = EagerDrainTransport(app.conf.broker_consumer, app)  # see streams/consumer.py
    runtime.bind(app)
    transactions = app.topic(settings.topics.transactions, key_type=bytes, value_type=bytes)
    labels = app.topic(settings.topics.labels, key_type=bytes, value_type=bytes)
    within = settings.batch_max_wait_ms / 1000.0

    @app.agent(transactions, name="score-transactions")
    async def score_transactions(stream: Any) -> None:  # faust.Stream; its stubs lack noack_take
        pipeline = await _or_exit(runtime.pipeline(), "building the scoring pipeline")
        # Batches in flight. faust's take stops filling its buffer while the agent holds a batch, so the agent
        # only hands each batch to tasks and asks for the next at once: batch k+1 is collected while batch k is
        # applied to Redis and batch k-1 is scored and published. Features are applied in batch order (each
        # prepare awaits the previous one), records are published in batch order (each finish awaits the
        # previous one), and a batch is acked only after its own records were acknowledged by the broker.
        # Awaiting the oldest task when too many are in flight is the backpressure.
        chain: deque[asyncio.Task[None]] = deque()
        prepared: asyncio.Task[PreparedBatch] | None = None
        try:
            async for events in stream.noack_take(settings.batch_max_size, within=within):
                prepared = asyncio.ensure_future(_prepare_after(prepared, pipeline, events))
                previous = chain[-1] if chain else None
                chain.append(asyncio.ensure_future(_finish_after(previous, prepared, pipeline, stream, runtime,
                                                                 events)))
                while chain and (chain[0].done() or len(chain) > settings.max_batches_in_flight):
                    await chain.popleft()
        finally:
            while chain:
                await chain.popleft()

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
