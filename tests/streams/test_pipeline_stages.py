"""The pipeline's first two stages against the session's real Redis: ``check`` validates each message on its
own (the worker runs it as messages arrive), ``prepare`` dead-letters what failed and a transaction id
repeated within the batch, and applies the rest to the feature state in order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

import faust
import orjson
import redis.asyncio as aioredis
from faust.types import TP, Message

from features import FEATURE_LIST, RedisFeatureStore
from fraudstream.sources.simulator import SimulationConfig, Simulator
from streams.identity import CardHasher
from streams.pipeline import PipelineConfig, TransactionPipeline
from streams.schema import RawSchema


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None


def _pipeline(features: RedisFeatureStore) -> TransactionPipeline:
    config = PipelineConfig(scored_topic="scored", dead_letter_topic="dlq", feature_names=FEATURE_LIST.names,
                            feature_list_hash=FEATURE_LIST.hash)
    # check and prepare use neither the scorer nor the publisher
    return TransactionPipeline(config, features=features, scorer=cast(Any, None), publisher=cast(Any, None),
                               hasher=CardHasher(b"test-secret"))


async def test_check_then_prepare_dead_letters_bad_and_repeated_messages(redis_url: str) -> None:
    payloads = [orjson.dumps(tx.payload) for tx in Simulator(SimulationConfig(count=3, seed=5)).transactions()]
    values: list[bytes | None] = [payloads[0], b"{not json", payloads[1], payloads[0], None, payloads[2]]
    messages = [Record("transactions", 0, i, b"k", v) for i, v in enumerate(values)]
    client = aioredis.Redis.from_url(redis_url)
    store = RedisFeatureStore(client, key_prefix=f"stages-{uuid.uuid4().hex[:8]}")
    try:
        pipeline = _pipeline(store)
        checked = pipeline.check(messages)
        assert [c.message.offset for c in checked] == list(range(6))  # one per message, in order
        assert sum(isinstance(c.result, tuple) for c in checked) == 4  # the repeat is only caught in prepare
        batch = await pipeline.prepare(checked)
        assert [t.transaction_id for t in batch.transactions] == [orjson.loads(p)["transaction_id"] for p in payloads]
        assert batch.outcome.dead_lettered == 3
        assert batch.outcome.reasons["duplicate:transaction_id"] == 1
        assert [m.topic for m in batch.out] == ["dlq"] * 3
        assert batch.outcome.features is not None
        assert batch.outcome.features.shape == (3, len(FEATURE_LIST.names))
        assert batch.validate_s > 0
    finally:
        await store.purge()
        await client.aclose()


def _faust_message(offset: int, key: bytes | None, value: bytes | None) -> Message:
    return Message(topic="t", partition=1, offset=offset, timestamp=0.0, timestamp_type=0, headers=[], key=key,
                   value=value, checksum=None, tp=TP("t", 1))


async def test_raw_schema_hands_over_key_and_value_unchanged() -> None:
    app = faust.App("raw-schema-test", broker="kafka://127.0.0.1:1", env={})
    decode = RawSchema().compile(app)
    message = _faust_message(7, b"card", b'{"a": 1}')
    event = await decode(message, propagate=True)
    assert (event.key, event.value, event.message) == (b"card", b'{"a": 1}', message)
    empty = await decode(_faust_message(8, None, None), propagate=True)
    assert (empty.key, empty.value) == (None, None)  # the pipeline dead-letters an empty value
