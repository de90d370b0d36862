"""The walking skeleton on real services: produce → a real worker process → scored record / DLQ."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis.asyncio as aioredis

from config.settings import Topics
from features import FEATURE_LIST, RedisFeatureStore, TransactionEvent
from features.offline import compute_offline
from features.online import entity_keys
from fraudstream.workers import WorkerProcess
from schemas import ScoredTransaction
from tests.fixtures.topics import OutputReader, produce, run_id
from tests.fixtures.workers import launch, worker_env

pytestmark = pytest.mark.integration
TOPICS = Topics()


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str, local_backend: str
) -> Iterator[WorkerProcess]:
    home = tmp_path_factory.mktemp("worker-home")
    env = worker_env(home, kafka_bootstrap, redis_url, local_backend, FRAUD_APP_ID=run_id("e2e"))
    process = launch(env, home / "worker.log")
    assert process.wait_ready(timeout_s=120), process.tail()
    yield process
    process.stop()


def minutes(n: int) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n)


def transaction(tx_id: str, card: str, amount: float, at_minute: int = 0, terminal: str = "term-1") -> bytes:
    return json.dumps({
        "transaction_id": tx_id, "card_id": card, "terminal_id": terminal, "amount": amount,
        "currency": "EUR", "event_time": minutes(at_minute).isoformat().replace("+00:00", "Z"),
    }).encode()


async def test_transactions_are_scored_and_bad_records_dead_lettered(
    worker: WorkerProcess, kafka_bootstrap: str
) -> None:
    run = run_id("e2e")
    good = [(TOPICS.transactions, f"card-{i % 7}".encode(), transaction(f"{run}-{i}", f"card-{i % 7}", 10.0 + i, i))
            for i in range(300)]
    bad = [
        (TOPICS.transactions, b"k", transaction(f"{run}-neg", "card-1", -4.0)),
        (TOPICS.transactions, b"k", f"{run}-not-json".encode()),
        (TOPICS.transactions, b"k", b'{"transaction_id": "' + f"{run}-nocard".encode() + b'"}'),
    ]
    async with OutputReader(kafka_bootstrap, TOPICS) as reader:
        await produce(kafka_bootstrap, good + bad)
        out = await reader.read_until(
            lambda o: sum(k.startswith(run) for k in o.scored) >= 300 and len(o.dead_ids(run)) >= 3,
            timeout_s=120,
        )
    scored = {k: v for k, v in out.scored.items() if k.startswith(run)}
    assert len(scored) == 300, worker.tail()
    record = scored[f"{run}-5"]
    ScoredTransaction.model_validate(record)  # the published bytes follow the published schema
    assert 0.0 <= record["score"] <= 1.0
    assert record["decision"] in {"approve", "review", "decline"}
    assert record["feature_list_hash"] == FEATURE_LIST.hash
    assert record["card_ref"] != "card-5" and len(record["card_ref"]) == 32  # never the clear card id
    assert record["model_version"] == 1
    assert record["event_time"] == "2026-01-01T00:05:00Z"  # UTC, written as the input wrote it
    assert record["degraded"] is False
    assert_stage_timings(scored.values(), worker)
    reasons = sorted(d["reason"] for d in out.dead_ids(run))
    assert reasons == ["decode:json", "validation:amount:greater_than_equal", "validation:card_id:missing"]
    assert all(d["topic"] == TOPICS.transactions and d["offset"] >= 0 for d in out.dead_ids(run))


async def test_a_redelivered_transaction_does_not_change_its_features(
    worker: WorkerProcess, kafka_bootstrap: str, redis_url: str
) -> None:
    """The same transaction again (as a redelivery would bring it) leaves the card's and the terminal's
    feature state in Redis byte for byte as it was, and the next transaction's features equal the offline
    engine's on the history counted once. (Scores alone cannot show this: the test model saturates.)"""
    run = run_id("redeliver")
    card, terminal = f"{run}-card", f"{run}-term"
    first = [(TOPICS.transactions, card.encode(), transaction(f"{run}-{i}", card, 20.0 + i, i, terminal))
             for i in range(5)]
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with OutputReader(kafka_bootstrap, TOPICS) as reader:
            await produce(kafka_bootstrap, first)
            out = await reader.read_until(lambda o: sum(k.startswith(run) for k in o.scored) >= 5, timeout_s=60)
            before = {k: v["score"] for k, v in out.scored.items() if k.startswith(run)}
            assert len(before) == 5, worker.tail()
            card_ref = out.scored[f"{run}-0"]["card_ref"]
            keys = state_keys(client, card_ref, terminal)
            state = {key: await client.dump(key) for key in keys}
            assert state[keys[0]] and state[keys[3]], "no feature state for the card and the terminal"
            count = out.scored_count
            await produce(kafka_bootstrap, first[2:3])
            out = await reader.read_until(lambda o: o.scored_count >= count + 1, timeout_s=60)
        assert out.scored_count == count + 1
        assert out.scored[f"{run}-2"]["score"] == pytest.approx(before[f"{run}-2"], abs=0)
        assert {key: await client.dump(key) for key in keys} == state, "the redelivery changed the feature state"

        probe = TransactionEvent(transaction_id=f"{run}-probe", card_ref=card_ref, terminal_id=terminal,
                                 event_time=minutes(6).timestamp(), amount=42.0)
        store = RedisFeatureStore(client, key_prefix=FEATURE_KEY_PREFIX)
        await store.load_scripts()
        online = await store.apply_and_read([probe])
    finally:
        await client.aclose()
    history = pd.DataFrame({
        "transaction_id": [f"{run}-{i}" for i in range(5)] + [probe.transaction_id],
        "card_ref": card_ref, "terminal_id": terminal,
        "event_time": [minutes(i).timestamp() for i in range(5)] + [probe.event_time],
        "amount": [20.0 + i for i in range(5)] + [probe.amount], "latitude": np.nan, "longitude": np.nan,
    })
    offline = compute_offline(history, None)[-1:]
    assert np.allclose(online, offline, rtol=1e-9, atol=1e-9), dict(
        zip(FEATURE_LIST.names, zip(online[0], offline[0], strict=True), strict=True))


STAGES = ("fetch_ms", "batch_wait_ms", "features_ms", "score_wait_ms", "model_ms")


def assert_stage_timings(records: Iterable[dict[str, Any]], worker: WorkerProcess) -> None:
    """Each scored record says where its time went (``timings``), within the time from its Kafka timestamp
    to its batch's publication (``latencies.end_to_end_ms``, the batch's oldest record); the worker's
    /metrics counts every published record once per stage, publish included."""
    records = list(records)
    for record in records:
        timings = record["timings"]
        assert set(timings) == set(STAGES), timings
        assert all(timings[s] >= 0 for s in STAGES[1:]), timings
        assert timings["fetch_ms"] >= -1.0, timings  # Kafka's timestamps are whole milliseconds
        assert sum(timings.values()) <= record["latencies"]["end_to_end_ms"] + 1.0, record
    match = re.search(r"worker metrics on ([0-9.]+):(\d+)/metrics", worker.output())
    assert match, worker.tail()
    text = urllib.request.urlopen(f"http://127.0.0.1:{match.group(2)}/metrics", timeout=5).read().decode()
    counts = dict(re.findall(r'fraudstream_record_stage_latency_seconds_count\{stage="([a-z_]+)"\} ([0-9.e+]+)', text))
    assert set(counts) == {"fetch", "batch_wait", "features", "score_wait", "model", "publish"}, counts
    assert all(float(n) >= len(records) for n in counts.values()), counts


FEATURE_KEY_PREFIX = "fs"  # the worker's default (FRAUD_FEATURE_KEY_PREFIX)


def state_keys(client: aioredis.Redis, card_ref: str, terminal: str) -> list[str]:
    """The card's and the terminal's Redis keys, as the worker's feature store names them."""
    prefix = RedisFeatureStore(client, key_prefix=FEATURE_KEY_PREFIX).key_prefix
    return [*entity_keys(prefix, "card", card_ref), *entity_keys(prefix, "terminal", terminal)]


def test_worker_log_has_no_tracebacks(worker: WorkerProcess) -> None:
    assert "Traceback" not in worker.tail(400), worker.tail(80)
