"""The faust application: two thin agents over ``transactions`` and ``fraud-labels``.

``transactions`` is a chunked topic (``streams/faust_patches.py``): its agent gets each fetch's records as
one chunk. The labels agent batches with ``noack_take``. Both ack only after their batch was handled
(published and acknowledged), because faust's ``take`` acks in a ``finally`` even when the batch failed.
The worker's clients live in ``WorkerRuntime`` (``streams/runtime.py``), a service the app starts first and
stops last. An unexpected error crashes the app through the runtime (``WorkerRuntime.fail``): the worker
stops without acking the batch, so it is redelivered to the next worker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faust

from config.settings import Settings
from streams import faust_patches
from streams.faust_patches import Chunk, RawSchema
from streams.messages import InboundMessage
from streams.runtime import WorkerRuntime

log = logging.getLogger(__name__)
CONSUMER_LAG_INTERVAL_S = 5.0


def inbound(events: Any) -> list[InboundMessage]:
    return [event.message for event in events]  # faust's Message is an InboundMessage (streams/messages.py)


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
        # the topics faust creates itself (its assignor's leader topic): replicated like fraudstream's own
        topic_replication_factor=settings.kafka_replication_factor,
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
    faust_patches.install(app, chunked_topics=[settings.topics.transactions],
                          fetch_min_bytes=settings.kafka_fetch_min_bytes,
                          fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
                          fetch_hold_min_records=settings.kafka_fetch_hold_min_records)
    runtime.bind(app)
    transactions = app.topic(settings.topics.transactions, schema=RawSchema())
    labels = app.topic(settings.topics.labels, schema=RawSchema())
    within = settings.batch_max_wait_ms / 1000.0

    @app.agent(transactions, name="score-transactions")
    async def score_transactions(stream: Any) -> None:  # faust.Stream; its stubs lack noack
        # The agent hands each chunk to the runtime's flow and takes the next at once (streams/flow.py),
        # which merges the chunks that arrive while the pipeline is busy.
        pipeline = runtime.pipeline
        try:
            async for chunk in stream.noack():
                if runtime.failure is not None:
                    return  # the worker is stopping: nothing more is taken, nothing acked
                if not isinstance(chunk, Chunk):
                    await runtime.fail("the transactions agent got no chunk", TypeError(type(chunk).__name__))
                    return
                taken = chunk.take(app)
                if not taken:
                    continue
                try:
                    checked = pipeline.check(taken, fetched_at=chunk.fetched_at)
                except Exception as exc:
                    await runtime.fail("unexpected error validating a batch", exc)
                    return
                await runtime.submit(checked)
        finally:
            await runtime.drain()

    @app.timer(interval=CONSUMER_LAG_INTERVAL_S)  # type: ignore[untyped-decorator]  # faust's stubs
    async def consumer_lag() -> None:
        await runtime.update_consumer_lag()

    @app.agent(labels, name="apply-labels")
    async def apply_labels(stream: Any) -> None:
        handler = runtime.labels
        async for events in stream.noack_take(max(64, settings.batch_max_size), within=within * 10):
            if runtime.failure is not None:
                return
            try:
                await handler.handle(inbound(events))
            except Exception as exc:
                await runtime.fail("unexpected error applying labels", exc)
                return
            for event in events:
                await stream.ack(event)

    return app
