"""Inputs nobody in the project wrote, through a real worker, Kafka and Redis (issue: real-world inputs):
zero-amount authorisations, one id with two contents, card numbers outside ``card_id``, traceable dead
letters, the consumer-lag gauge and where ``/metrics`` listens."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis

from config.settings import Topics
from features import RedisFeatureStore
from features.ids import TransactionIds
from features.online import entity_keys
from fraudstream.workers import WorkerProcess
from schemas.scored import PER_DELIVERY_FIELDS
from streams.outputs import decode_result
from tests.fixtures.history import (
    History,
    iso,
    max_rel_diff,
    offline_probe_vectors,
    online_probe_vectors,
    redis_contents,
)
from tests.fixtures.topics import Collector, private_topics, produce, run_id, wait_caught_up
from tests.fixtures.workers import HASHER, launch, wait_ready, worker_env

pytestmark = pytest.mark.integration
FDH_ENV = "FRAUDSTREAM_TEST_FDH"
START = 1_772_000_000.0  # 2026-02-25, a fixed event-time origin
PANS = {"terminal": "4012888888881881", "transaction": "6011111111111117", "extra": "4111 1111 1111 1111"}


@dataclass
class Running:
    run: str
    topics: Topics
    worker: WorkerProcess
    collector: Collector
    bootstrap: str
    redis_url: str


@pytest.fixture(scope="module")
async def running(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str, local_backend: str
) -> AsyncIterator[Running]:
    run, topics = await private_topics(kafka_bootstrap, "inputs")
    home = tmp_path_factory.mktemp("inputs-home")
    env = worker_env(home, kafka_bootstrap, redis_url, local_backend, topics, run, FRAUD_METRICS_PORT="0")
    worker = launch(env, home / "worker.log")
    async with Collector(kafka_bootstrap, topics, keep_raw=True) as collector:
        try:
            await wait_ready(worker)
            yield Running(run, topics, worker, collector, kafka_bootstrap, redis_url)
        finally:
            worker.stop()


def tx(run: str, name: str, card: str, amount: float, minute: float, terminal: str = "T1") -> dict[str, Any]:
    return {"transaction_id": f"{run}-{name}", "card_id": f"{run}-{card}", "terminal_id": f"{run}-{terminal}",
            "amount": amount, "currency": "EUR", "event_time": iso(START + 60 * minute)}


def records(topics: Topics, rows: list[dict[str, Any]]) -> list[tuple[str, bytes, bytes]]:
    return [(topics.transactions, str(r.get("card_id", "k")).encode(), orjson.dumps(r)) for r in rows]


async def entity_state(redis_url: str, row: dict[str, Any]) -> dict[bytes, bytes]:
    """Every field of the row's card and terminal state hashes (what a double count would change)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        prefix = RedisFeatureStore(client).key_prefix
        state: dict[bytes, bytes] = {}
        for entity, own in (("card", HASHER.reference(row["card_id"])), ("terminal", row["terminal_id"])):
            for field_, value in (await client.hgetall(entity_keys(prefix, entity, own)[0])).items():
                state[entity.encode() + b":" + field_] = value
        return state
    finally:
        await client.aclose()


def dead_for(r: Running, tx_id: str) -> list[dict[str, Any]]:
    return [d for d in r.collector.out.dead.values() if d.get("transaction_id") == tx_id]


async def test_zero_amount_authorisations_are_scored_with_the_offline_features(running: Running) -> None:
    """Zero amounts first on a card (mean 0: ratio and z-score divide by zero), among others, and last;
    every one is scored, and the state the worker built equals the offline engine's on the same history."""
    r = running
    history = History.build(run_id("zero"), cards=30, per_card=12, seed=4)
    firsts: set[str] = set()
    for i, row in enumerate(history.tx):
        if row["card_id"] not in firsts or i % 7 == 0:
            row["amount"] = 0.0
        firsts.add(row["card_id"])
    zero_ids = {row["transaction_id"] for row in history.tx if row["amount"] == 0.0}
    assert len(zero_ids) > 40
    await produce(r.bootstrap, history.records(r.topics))
    out = await r.collector.wait(lambda o: history.ids <= o.scored.keys(), 180, "the zero-amount history",
                                 worker=r.worker)
    for tx_id in zero_ids:
        assert out.scored[tx_id]["amount"] == 0.0 and 0.0 <= out.scored[tx_id]["score"] <= 1.0
    probes = history.probes()
    probes = [p.__class__(**{**{s: getattr(p, s) for s in p.__slots__}, "amount": 0.0}) for p in probes]
    online = await online_probe_vectors(r.redis_url, probes)
    offline = offline_probe_vectors(history, probes)
    assert np.isfinite(online).all()
    worst, feature = max_rel_diff(online, offline)
    assert worst <= 1e-6, f"online and offline differ by {worst} on {feature}"


@pytest.mark.skipif(not os.environ.get(FDH_ENV), reason=f"set {FDH_ENV} to the fdh Parquet file to run this")
async def test_every_zero_amount_row_of_the_fdh_file_is_scored(running: Running) -> None:
    from features.history import load_fdh
    from fraudstream.sources.replay import transaction_records

    r = running
    transactions, _ = load_fdh(os.environ[FDH_ENV])
    zero = transactions[transactions["amount"] == 0.0].copy()
    # 29 in the 2018-04-01…07-31 file (42 over the whole simulation, later weeks included); the issue's ids
    # among them.
    assert len(zero) >= 29
    assert {"129590", "187419", "207512"} <= set(zero["transaction_id"])
    zero["transaction_id"] = f"{r.run}-fdh-" + zero["transaction_id"]
    sent = transaction_records(zero, r.topics.transactions)
    await produce(r.bootstrap, [(rec.topic, rec.key, rec.value) for rec in sent])
    wanted = set(zero["transaction_id"])
    out = await r.collector.wait(lambda o: wanted <= o.scored.keys(), 120, "the fdh zero-amount rows",
                                 worker=r.worker)
    assert all(out.scored[t]["amount"] == 0.0 for t in wanted)
    assert not [d for d in out.dead.values() if str(d.get("transaction_id", "")).startswith(f"{r.run}-fdh-")]


async def test_an_exact_redelivery_in_a_later_batch_gets_the_first_score_and_changes_no_state(
    running: Running,
) -> None:
    r = running
    rows = [tx(r.run, f"re-{i}", "card-re", 20.0 + i, i) for i in range(5)]
    await produce(r.bootstrap, records(r.topics, rows))
    await r.collector.wait(lambda o: all(row["transaction_id"] in o.scored for row in rows), 60, "first sends")
    first = {row["transaction_id"]: dict(r.collector.out.scored[row["transaction_id"]]) for row in rows}
    before = await entity_state(r.redis_url, rows[2])
    total = r.collector.out.scored_total
    await produce(r.bootstrap, records(r.topics, rows[2:3]))  # byte for byte the same record, later
    await r.collector.wait(lambda o: o.scored_total >= total + 1, 60, "the redelivery")
    again = r.collector.out.scored[rows[2]["transaction_id"]]
    # the first result again, field for field (the first was scored in a batch of five, which changes the
    # last float32 bits of the reason codes' contributions: a new score would not be this)
    per_delivery = PER_DELIVERY_FIELDS
    assert {k: v for k, v in again.items() if k not in per_delivery} == {
        k: v for k, v in first[rows[2]["transaction_id"]].items() if k not in per_delivery}
    assert await entity_state(r.redis_url, rows[2]) == before
    assert not dead_for(r, rows[2]["transaction_id"])


async def test_the_same_id_with_other_content_six_seconds_later_is_dead_lettered_not_scored(
    running: Running,
) -> None:
    """The issue's case: amount 30.0, then 999.0 under the same id 6 s later."""
    r = running
    first = tx(r.run, "conflict", "card-cf", 30.0, 0)
    positions = await produce(r.bootstrap, records(r.topics, [first]))
    await r.collector.wait(lambda o: first["transaction_id"] in o.scored, 60, "the first content")
    before = await entity_state(r.redis_url, first)
    scored_before = r.collector.out.scored_total
    await asyncio.sleep(6)
    second = {**first, "amount": 999.0}
    other_card = {**first, "card_id": f"{r.run}-card-cf-2", "terminal_id": f"{r.run}-T9"}  # other entities
    later = await produce(r.bootstrap, records(r.topics, [second, other_card]))
    await r.collector.wait(lambda o: len(dead_for(r, first["transaction_id"])) >= 2, 60, "the conflicts")
    await asyncio.sleep(2)
    assert r.collector.out.scored_total == scored_before  # neither was scored
    assert r.collector.out.scored[first["transaction_id"]]["amount"] == 30.0
    for dead, position in zip(sorted(dead_for(r, first["transaction_id"]), key=lambda d: d["offset"]),
                              sorted(later, key=lambda p: p[2]), strict=False):
        assert dead["reason"] == "duplicate:transaction_id:conflict"
        owner = dead["conflicts_with"]
        assert (owner["topic"], owner["partition"], owner["offset"]) == positions[0]
        assert dead["content_hash"] != owner["content_hash"]
        assert dead["card_ref"] in {HASHER.reference(first["card_id"]), HASHER.reference(other_card["card_id"])}
        assert (dead["topic"], dead["partition"], dead["offset"]) in later or position
    assert await entity_state(r.redis_url, first) == before
    assert await entity_state(r.redis_url, other_card) == {}  # the other card never saw it


async def test_dead_letters_name_the_transaction_and_card_even_when_invalid(running: Running) -> None:
    r = running
    negative = tx(r.run, "neg", "card-dl", -4.0, 0)
    extra = {**tx(r.run, "extra", "card-dl", 4.0, 1), "surprise": True}
    values = [orjson.dumps(negative), orjson.dumps(extra),
              b'{"transaction_id": "' + f"{r.run}-broken".encode() + b'", "card_id": "' + f"{r.run}-card-dl".encode()
              + b'", "amount": 12.5, "event_ti']
    await produce(r.bootstrap, [(r.topics.transactions, b"k", v) for v in values])
    names = [f"{r.run}-neg", f"{r.run}-extra", f"{r.run}-broken"]
    await r.collector.wait(lambda o: all(dead_for(r, n) for n in names), 60, "the three dead letters")
    card_ref = HASHER.reference(f"{r.run}-card-dl")
    reasons = {n: dead_for(r, n)[0]["reason"] for n in names}
    assert reasons == {names[0]: "validation:amount:greater_than_equal", names[1]: "validation:record:extra_forbidden",
                       names[2]: "decode:json"}
    assert all(dead_for(r, n)[0]["card_ref"] == card_ref for n in names)


def _all_outputs(r: Running) -> bytes:
    """Every published value, with the dead letters' originals decoded (base64 is no protection)."""
    parts = list(r.collector.out.raw_values)
    parts += [base64.b64decode(d["original_b64"]) for d in r.collector.out.dead.values()]
    return b"\n".join(parts)


def _digits(blob: bytes) -> str:
    return re.sub(r"[^0-9]", "", blob.decode("utf-8", "replace"))


async def _send_and_wait_dead(r: Running, row: dict[str, Any], key: bytes = b"k") -> dict[str, Any]:
    positions = await produce(r.bootstrap, [(r.topics.transactions, key, orjson.dumps(row))])
    out = await r.collector.wait(lambda o: positions[0] in o.dead, 60, "the rejection", worker=r.worker)
    return out.dead[positions[0]]


async def test_a_card_number_in_terminal_id_is_rejected_and_never_reaches_redis_or_a_topic(
    running: Running,
) -> None:
    r = running
    row = {**tx(r.run, "pan-term", "card-pan", 12.0, 0), "terminal_id": PANS["terminal"]}
    dead = await _send_and_wait_dead(r, row)
    assert dead["reason"] == "validation:pan_in_field:terminal_id"
    assert dead["transaction_id"] == row["transaction_id"] and dead["card_ref"] == HASHER.reference(row["card_id"])
    assert PANS["terminal"] not in _digits(_all_outputs(r))
    assert PANS["terminal"].encode() not in await redis_contents(r.redis_url)


async def test_a_card_number_as_transaction_id_is_rejected_and_never_published(running: Running) -> None:
    r = running
    row = {**tx(r.run, "x", "card-pan", 12.0, 1), "transaction_id": PANS["transaction"]}
    dead = await _send_and_wait_dead(r, row, key=PANS["transaction"].encode())
    assert dead["reason"] == "validation:pan_in_field:transaction_id"
    assert dead["transaction_id"] == "#" * 16  # readable, so named, but masked
    assert PANS["transaction"] not in _digits(_all_outputs(r))
    assert PANS["transaction"].encode() not in await redis_contents(r.redis_url)


async def test_a_spaced_card_number_in_an_extra_field_is_masked_in_the_dead_letter(running: Running) -> None:
    r = running
    row = {**tx(r.run, "pan-extra", "card-pan", 12.0, 2), "note": f"card {PANS['extra']} thanks"}
    dead = await _send_and_wait_dead(r, row)
    assert dead["reason"] == "validation:pan_in_field:unknown_field"
    original = json.loads(base64.b64decode(dead["original_b64"]))
    assert original["note"] == "card #### #### #### #### thanks"
    assert original["card_id"] == "[redacted]"
    assert PANS["extra"].replace(" ", "") not in _digits(_all_outputs(r))


async def test_consumer_lag_is_set_per_partition_and_metrics_listen_on_loopback(running: Running) -> None:
    r = running
    await produce(r.bootstrap, records(r.topics, [tx(r.run, f"lag-{i}", f"card-lag-{i % 9}", 5.0, i)
                                                  for i in range(200)]))
    await wait_caught_up(r.bootstrap, r.run, r.topics.transactions, timeout_s=120)
    match = re.search(r"worker metrics on ([0-9.]+):(\d+)/metrics", r.worker.output())
    assert match, r.worker.tail()
    host, port = match.group(1), int(match.group(2))
    assert host == "127.0.0.1"
    lags: dict[str, float] = {}
    for _ in range(40):  # the gauge is refreshed every 5 s
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        lags = {m.group(1): float(m.group(2)) for m in re.finditer(
            r'fraudstream_consumer_lag\{partition="(\d+)",topic="' + re.escape(r.topics.transactions) + r'"\} (\S+)',
            text)}
        if len(lags) == 4 and all(v == 0.0 for v in lags.values()):
            break
        await asyncio.sleep(0.5)
    assert sorted(lags) == ["0", "1", "2", "3"] and all(v == 0.0 for v in lags.values()), lags
    outside = _non_loopback_address()
    if outside is not None:
        with pytest.raises(OSError), socket.create_connection((outside, port), timeout=2):
            pass


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent, the kernel picks the source address
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


async def test_redis_holds_the_id_record_and_first_result_of_a_scored_transaction(running: Running) -> None:
    r = running
    row = tx(r.run, "idrec", "card-id", 7.0, 0)
    positions = await produce(r.bootstrap, records(r.topics, [row]))
    await r.collector.wait(lambda o: row["transaction_id"] in o.scored, 60, "the transaction")
    client = aioredis.Redis.from_url(r.redis_url)
    try:
        key = TransactionIds(client).key(row["transaction_id"])
        for _ in range(20):  # the result is stored right after the broker acknowledged its publication
            record = await client.hgetall(key)
            if b"o" in record:
                break
            await asyncio.sleep(0.25)
        ttl_ms = await client.pttl(key)
    finally:
        await client.aclose()
    topic, partition, offset = positions[0]
    assert record[b"c"].decode().endswith(f"|{topic}|{partition}|{offset}")
    published = r.collector.out.scored[row["transaction_id"]]
    stored = decode_result(record[b"o"])
    assert stored == {k: published[k] for k in stored} and stored["score"] == published["score"]
    assert 0 < ttl_ms <= 86_400_000
