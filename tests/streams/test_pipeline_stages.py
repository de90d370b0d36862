"""The pipeline's first two stages against the session's real Redis: ``check`` validates each message on its
own (the worker runs it as messages arrive), ``prepare`` dead-letters what failed and a transaction id used
by other content, and applies the rest (an exact repeat included) to the feature state in order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

import faust
import orjson
import redis.asyncio as aioredis
from faust.types import TP, Message

from features import FEATURE_LIST, RedisFeatureStore
from features.ids import TransactionIds
from features.simulator import SimulationConfig, Simulator
from schemas import DeadLetter
from streams.faust_patches import RawSchema
from streams.identity import CardHasher
from streams.pipeline import Checked, PipelineConfig, TransactionPipeline


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None


def _pipeline(features: RedisFeatureStore, ids: TransactionIds) -> TransactionPipeline:
    config = PipelineConfig(scored_topic="scored", dead_letter_topic="dlq", feature_names=FEATURE_LIST.names,
                            feature_list_hash=FEATURE_LIST.hash)
    # check and prepare use neither the scorer nor the publisher
    return TransactionPipeline(config, features=features, ids=ids, scorer=cast(Any, None),
                               publisher=cast(Any, None), hasher=CardHasher(b"test-secret"))


async def test_check_then_prepare_dead_letters_bad_and_conflicting_messages(redis_url: str) -> None:
    payloads = [orjson.dumps(tx.payload) for tx in Simulator(SimulationConfig(count=3, seed=5)).transactions()]
    changed = orjson.dumps({**orjson.loads(payloads[1]), "amount": 999.0})
    values: list[bytes | None] = [payloads[0], b"{not json", payloads[1], payloads[0], None, payloads[2], changed]
    messages = [Record("transactions", 0, i, b"k", v) for i, v in enumerate(values)]
    client = aioredis.Redis.from_url(redis_url)
    prefix = f"stages-{uuid.uuid4().hex[:8]}"
    store = RedisFeatureStore(client, key_prefix=prefix)
    ids = TransactionIds(client, key_prefix=prefix)
    try:
        pipeline = _pipeline(store, ids)
        checked = pipeline.check(messages)
        assert [c.message.offset for c in checked] == list(range(7))  # one per message, in order
        assert sum(isinstance(c.result, Checked) for c in checked) == 5  # repeats are only known in prepare
        batch = await pipeline.prepare(checked)
        tx_ids = [orjson.loads(p)["transaction_id"] for p in payloads]
        # the exact repeat of the first goes on (it gets the first vector back); the conflict does not
        assert [t.transaction_id for t in batch.transactions] == [tx_ids[0], tx_ids[1], tx_ids[0], tx_ids[2]]
        assert batch.outcome.dead_lettered == 3
        assert batch.outcome.reasons["duplicate:transaction_id:conflict"] == 1
        assert [m.topic for m in batch.out] == ["dlq"] * 3
        conflict = DeadLetter.model_validate_json(batch.out[-1].value)
        assert conflict.transaction_id == tx_ids[1] and conflict.offset == 6
        assert conflict.conflicts_with is not None and conflict.conflicts_with.offset == 2
        assert conflict.content_hash != conflict.conflicts_with.content_hash
        features = batch.outcome.features
        assert features is not None and features.shape == (4, len(FEATURE_LIST.names))
        assert (features[2] == features[0]).all()  # the repeat: the first vector, bit for bit
        assert batch.validate_s > 0
        # once the first result is stored (after its publication), a repeat gets it and skips the features
        await ids.record_outcomes([(tx_ids[0], b'{"score": 0.25}')])
        again = await pipeline.prepare(pipeline.check([Record("transactions", 1, 9, b"k", payloads[0])]))
        assert again.transactions == [] and again.outcome.features is None
        assert [(t.transaction_id, stored) for t, _, stored in again.repeats] == [(tx_ids[0], b'{"score": 0.25}')]
    finally:
        await store.purge()
        await ids.purge()
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
