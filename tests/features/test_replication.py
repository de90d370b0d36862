"""WAIT (features/replication.py) on one real redis-server: a batch whose writes no replica confirmed is not
done — the worker's retry path retries it (logged, counted) and the batch does not return, so it is never
acked — until a replica attaches; then it completes once, with the features of the history applied once."""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from features import FEATURE_LIST, RedisFeatureStore, TransactionEvent
from features.ids import TransactionIds
from features.replication import ReplicasBehind, ReplicaWait, slot_tag
from features.simulator import SimulationConfig, Simulator
from fraudstream.stack.redis import scratch_redis
from streams import failures
from streams.identity import CardHasher
from streams.pipeline import PipelineConfig, TransactionPipeline
from tests.fixtures.stack import require_redis_server
from tests.streams.test_pipeline_stages import Record


def test_the_marker_key_lands_in_the_slot_asked_for() -> None:
    for slot in (0, 1, 5461, 10923, 16383):
        (_, key, _), wait = ReplicaWait(1, 10, "fs").commands(slot)
        assert key_slot(key) == slot and key.startswith(b"fs:durable:{" + slot_tag(slot))
        assert wait == [b"WAIT", b"1", b"10"]
    with pytest.raises(ValueError, match="timeout"):
        ReplicaWait(1, 0)  # WAIT n 0 would block for ever on a dead replica


async def test_a_shortfall_keeps_the_batch_retrying_until_a_replica_confirms(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require_redis_server()
    txs = [orjson.dumps(t.payload) for t in Simulator(SimulationConfig(count=40, seed=11)).transactions()]
    messages = [Record("transactions", 0, i, b"k", v) for i, v in enumerate(txs)]
    config = PipelineConfig(scored_topic="scored", dead_letter_topic="dlq", feature_names=FEATURE_LIST.names,
                            feature_list_hash=FEATURE_LIST.hash)
    hasher = CardHasher(b"test-secret")
    failed: list[tuple[str, str]] = []
    remove_hook = failures.on_failure(lambda backend, kind: failed.append((backend, kind)))
    prefix = f"wait-{uuid.uuid4().hex[:8]}"
    with ExitStack() as servers:
        primary = servers.enter_context(scratch_redis(tmp_path / "primary"))
        client = aioredis.Redis.from_url(primary)
        store = RedisFeatureStore(client, key_prefix=prefix, wait_replicas=1, wait_timeout_ms=50)
        ids = TransactionIds(client, key_prefix=prefix, wait_replicas=1, wait_timeout_ms=50)
        reference = RedisFeatureStore(client, key_prefix=f"{prefix}-ref")  # no WAIT: the answer
        try:
            await store.load_scripts()
            await ids.load_scripts()
            with pytest.raises(ReplicasBehind, match="0 of 1 replicas"):
                await ids.record_outcomes([("t-1", b"{}")])
            # the scorer and publisher are never reached: the batch stops at its feature state
            pipeline = TransactionPipeline(config, features=store, ids=ids, scorer=cast(Any, None),
                                           publisher=cast(Any, None), hasher=hasher)
            caplog.set_level(logging.WARNING, logger="streams.retry")
            batch = asyncio.create_task(pipeline.prepare(pipeline.check(messages)))
            async with asyncio.timeout(30):
                while len(failed) < 3:  # three failed attempts, each retried
                    await asyncio.sleep(0.02)
            assert not batch.done(), "the batch went on although no replica confirmed its writes"
            assert set(failed) == {("redis", "ReplicasBehind")}
            warned = [r.getMessage() for r in caplog.records if r.name == "streams.retry"]
            assert any("feature state in Redis failed (ReplicasBehind: redis: 0 of 1 replicas" in m
                       for m in warned), warned
            # a replica attaches and syncs: the next attempt is confirmed and the batch completes
            host, port = primary.removeprefix("redis://").split("/")[0].split(":")
            servers.enter_context(scratch_redis(tmp_path / "replica", server_args=["--replicaof", host, port]))
            async with asyncio.timeout(60):
                prepared = await batch
            assert any("recovered after" in r.getMessage() for r in caplog.records if r.name == "streams.retry")
            assert prepared.outcome.features is not None and len(prepared.events) == len(messages)
            # confirmed again after every shortfall, applied once: the same vectors as the batch applied once,
            # and a probe per card (reading everything its state holds) agrees with that state too
            expected = await reference.apply_and_read(prepared.events)
            np.testing.assert_array_equal(prepared.outcome.features, expected.astype(np.float32))
            last = max(e.event_time for e in prepared.events)
            probes = [TransactionEvent(transaction_id=f"probe-{i}", card_ref=e.card_ref, terminal_id=e.terminal_id,
                                       event_time=last + 600.0, amount=42.0)
                      for i, e in enumerate({e.card_ref: e for e in prepared.events}.values())]
            np.testing.assert_array_equal(await store.apply_and_read(probes), await reference.apply_and_read(probes))
        finally:
            remove_hook()
            await store.purge()
            await reference.purge()
            await ids.purge()
            await client.aclose()
