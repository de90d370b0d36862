"""How ``bench e2e`` measures latency: its measured transactions follow the warm-up in event time (as live
traffic does, so none reaches the feature state as a late event merely because of how the benchmark drew
its data), the process that timestamps records runs without cyclic-GC pauses, and each run measures the
machine's own speed against the real Redis; saturation phases start once the workers' group is stable."""

from __future__ import annotations

import asyncio
import gc
import uuid
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import redis
from aiokafka import AIOKafkaConsumer

from config.kafka import delete_topics, ensure_topics
from config.settings import load_settings
from fraudstream.bench.e2e import group_stable, machine_reference, no_collector_pauses, warm_and_measured


def _event_times(items: list[tuple[bytes, bytes]]) -> list[datetime]:
    return [datetime.fromisoformat(orjson.loads(value)["event_time"]) for _, value in items]


def test_the_measured_transactions_follow_the_warm_up_in_event_time() -> None:
    warm, measured = warm_and_measured(2_000, 3_000, seed=7, prefix="t")

    assert (len(warm), len(measured)) == (2_000, 3_000)
    assert max(_event_times(warm)) <= min(_event_times(measured))
    ids = [orjson.loads(value)["transaction_id"] for _, value in warm + measured]
    assert len(set(ids)) == len(ids)


def test_the_collector_is_off_while_measuring_and_back_on_after_an_error() -> None:
    assert gc.isenabled()
    with no_collector_pauses():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), no_collector_pauses():
        raise RuntimeError("phase failed")
    assert gc.isenabled()


def test_the_machine_reference_measures_redis_and_validation_and_leaves_no_function(
    redis_url: str, tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path, redis_url=redis_url)

    reference = machine_reference(settings, seconds=0.2)

    assert reference["redis_trivial_call_cpu_us"] > 0
    assert reference["validate_cpu_us_per_tx"] > 0
    client = redis.Redis.from_url(redis_url)
    try:
        # RESP2 answers each library as a flat [name, value, ...] list; any other library on this Redis (a
        # worker's, loaded by an earlier test of the session) made indexing it by name a TypeError
        libraries = [dict(zip(lib[::2], lib[1::2], strict=True)) for lib in client.function_list()]
        assert all(lib[b"library_name"] != b"fsreference" for lib in libraries)
    finally:
        client.close()


async def test_group_stable_waits_for_the_members_and_says_when_they_never_come(kafka_bootstrap: str) -> None:
    group = f"bench-test-{uuid.uuid4().hex[:8]}"
    topic = f"{group}-tx"
    await ensure_topics(kafka_bootstrap, {topic: 2})
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group)
    await consumer.start()
    try:
        poll = asyncio.ensure_future(consumer.getmany(timeout_ms=10_000))  # joins the group
        await group_stable(kafka_bootstrap, group, members=1, timeout_s=60)
        assert consumer.assignment()
        with pytest.raises(RuntimeError, match="did not settle with 2 member"):
            await group_stable(kafka_bootstrap, group, members=2, timeout_s=1)
        poll.cancel()
    finally:
        await consumer.stop()
        await delete_topics(kafka_bootstrap, [topic])
