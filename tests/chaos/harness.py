"""Shared machinery of the fault tests: per-test topics, a card history with a known offline answer,
producing with offsets, an output collector that survives broker restarts, and the feature probe.

Every test gets its own topic names (``FRAUD_TOPICS__*``) and its own consumer group, so a worker never
sees another test's backlog and a test's accounting covers exactly what it produced. Cards and terminals
are unique per test too, because the worker's Redis key prefix is shared by the whole session.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from config.kafka import ensure_topics
from config.settings import Topics
from features import FEATURE_LIST, RedisFeatureStore, TransactionEvent
from features.offline import compute_offline
from fraudstream.stack.process import is_alive
from fraudstream.workers import WorkerProcess, spawn_worker
from fraudstream.workers import worker_env as fraud_worker_env
from streams.identity import CardHasher

CARD_SECRET = "chaos-test-secret-" + uuid.uuid4().hex[:8]
HASHER = CardHasher(CARD_SECRET.encode())
PARTITIONS = 4
START = datetime(2026, 3, 1, tzinfo=UTC).timestamp()


def run_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def run_topics(run: str) -> Topics:
    """Topic names private to one test (a prefix on every default name)."""
    return Topics(**{k: f"{run}.{v}" for k, v in Topics().model_dump().items()})


async def create_topics(bootstrap: str, topics: Topics) -> None:
    keyed = {topics.transactions, topics.scored, topics.labels}
    names = topics.model_dump().values()
    await ensure_topics(bootstrap, {t: PARTITIONS if t in keyed else 1 for t in names})


def worker_env(
    home: Path, bootstrap: str, redis_url: str, backend: str, topics: Topics, app_id: str, **extra: str
) -> dict[str, str]:
    return {
        **os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
        **fraud_worker_env(home=home, bootstrap=bootstrap, redis_url=redis_url, model_backend=backend, topics=topics,
                           FRAUD_APP_ID=app_id, FRAUD_CARD_HASH_SECRET=CARD_SECRET, **extra),
    }


def launch(env: dict[str, str], log: Path) -> WorkerProcess:
    return spawn_worker(env, log)


async def wait_ready(worker: WorkerProcess, timeout_s: float = 180.0) -> None:
    """Like ``WorkerProcess.wait_ready`` but without blocking the event loop (a servicer may run in it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "worker ready" in worker.tail(400):
            return
        if not is_alive(worker.pid):
            raise AssertionError(f"worker {worker.pid} exited during start-up:\n{worker.tail(60)}")
        await asyncio.sleep(0.25)
    raise AssertionError(f"worker {worker.pid} not ready in {timeout_s:.0f}s:\n{worker.tail(60)}")


# --- history ---------------------------------------------------------------------------------------


@dataclass
class History:
    """Transactions (and fraud labels) of ``cards`` cards; each card uses its own terminals so that every
    entity's rows live in one partition and their order is the production order."""

    run: str
    tx: list[dict[str, Any]] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)

    def card_id(self, i: int) -> str:
        # PAN-like clear card numbers: the no-clear-card checks search the outputs for these digits.
        return f"4{int(self.run.rsplit('-', 1)[1], 16) % 10**9:09d}{i:06d}"

    @classmethod
    def build(
        cls, run: str, *, cards: int, per_card: int, seed: int = 0, label_share: float = 0.05,
        spacing_s: float = 600.0,
    ) -> History:
        """``spacing_s``: mean event-time gap between a card's transactions. The default keeps a whole
        history within a few hours, so that any redelivery lies inside the engine's de-duplication
        horizon (one day of event time behind the entity's watermark); a 6,000-record history spread
        over days would let one redelivered commit window span more than a day, which no real-time
        stream does (see docs/reliability.md)."""
        h = cls(run)
        rng = np.random.default_rng(seed)
        for c in range(cards):
            card = h.card_id(c)
            t = START + float(rng.uniform(0, 3600))
            for k in range(per_card):
                t += float(rng.exponential(spacing_s))
                tx = {
                    "transaction_id": f"{run}-{c}-{k}", "card_id": card, "terminal_id": f"{run}-T{c}-{k % 3}",
                    "amount": round(float(rng.lognormal(3.5, 1.0)) + 0.01, 2), "currency": "EUR",
                    "event_time": iso(t),
                }
                if k % 2 == 0:
                    tx["latitude"], tx["longitude"] = round(50 + float(rng.uniform(0, 1)), 4), 4.25
                h.tx.append(tx)
                if rng.random() < label_share:
                    h.labels.append({
                        "transaction_id": tx["transaction_id"], "card_id": card,
                        "terminal_id": tx["terminal_id"], "event_time": tx["event_time"],
                        "available_at": iso(t + 3600), "is_fraud": True,
                    })
        # interleave the cards in event-time order, as real traffic would be
        h.tx.sort(key=lambda r: r["event_time"])
        return h

    def records(self, topics: Topics) -> list[tuple[str, bytes, bytes]]:
        out = [(topics.transactions, r["card_id"].encode(), orjson.dumps(r)) for r in self.tx]
        out += [(topics.labels, r["card_id"].encode(), orjson.dumps(r)) for r in self.labels]
        return out

    @property
    def ids(self) -> set[str]:
        return {r["transaction_id"] for r in self.tx}

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        tx = pd.DataFrame({
            "transaction_id": [r["transaction_id"] for r in self.tx],
            "card_ref": [HASHER.reference(r["card_id"]) for r in self.tx],
            "terminal_id": [r["terminal_id"] for r in self.tx],
            "event_time": [epoch(r["event_time"]) for r in self.tx],
            "amount": [float(r["amount"]) for r in self.tx],
            "latitude": [r.get("latitude", np.nan) for r in self.tx],
            "longitude": [r.get("longitude", np.nan) for r in self.tx],
        })
        labels = pd.DataFrame({
            "transaction_id": [r["transaction_id"] for r in self.labels],
            "card_ref": [HASHER.reference(r["card_id"]) for r in self.labels],
            "terminal_id": [r["terminal_id"] for r in self.labels],
            "event_time": [epoch(r["event_time"]) for r in self.labels],
            "available_at": [epoch(r["available_at"]) for r in self.labels],
            "is_fraud": [bool(r["is_fraud"]) for r in self.labels],
        })
        return tx, labels

    def probes(self) -> list[TransactionEvent]:
        """One new transaction per card, after its last one, on its first terminal: its feature vector
        reads everything the card's and terminal's state hold (counts, sums, distincts, labels)."""
        last: dict[str, dict[str, Any]] = {}
        for r in self.tx:
            last[r["card_id"]] = r
        return [
            TransactionEvent(
                transaction_id=f"{self.run}-probe-{i}", card_ref=HASHER.reference(card),
                terminal_id=r["terminal_id"], event_time=epoch(r["event_time"]) + 600.0, amount=42.0,
            )
            for i, (card, r) in enumerate(sorted(last.items()))
        ]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def epoch(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def offline_probe_vectors(history: History, probes: Sequence[TransactionEvent]) -> npt.NDArray[np.float64]:
    """What the offline engine says the probes' vectors are, after the history (applied once each)."""
    tx, labels = history.frames()
    extra = pd.DataFrame({
        "transaction_id": [p.transaction_id for p in probes], "card_ref": [p.card_ref for p in probes],
        "terminal_id": [p.terminal_id for p in probes], "event_time": [p.event_time for p in probes],
        "amount": [p.amount for p in probes], "latitude": np.nan, "longitude": np.nan,
    })
    both = pd.concat([tx, extra], ignore_index=True)
    return compute_offline(both, labels if len(labels) else None)[len(tx):]


async def online_probe_vectors(
    redis_url: str, probes: Sequence[TransactionEvent], *, key_prefix: str = "fs"
) -> npt.NDArray[np.float64]:
    """Apply the probes to the worker's own Redis state and return their vectors."""
    client = aioredis.Redis.from_url(redis_url)
    store = RedisFeatureStore(client, key_prefix=key_prefix)
    try:
        await store.load_scripts()
        return await store.apply_and_read(list(probes))
    finally:
        await store.close()
        await client.aclose()


def max_rel_diff(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> tuple[float, str]:
    rel = np.abs(a - b) / np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    rel = np.where(np.isnan(rel), np.inf, rel)
    if rel.size == 0:
        return 0.0, ""
    _, col = np.unravel_index(int(np.argmax(rel)), rel.shape)
    return float(rel.max()), FEATURE_LIST.names[col]


# --- Kafka in and out ------------------------------------------------------------------------------


async def produce(
    bootstrap: str, records: Sequence[tuple[str, bytes | None, bytes]], *, rate: float | None = None,
    max_request_size: int = 1 << 20,
) -> list[tuple[str, int, int]]:
    """Send every record (acks=all, idempotent); returns (topic, partition, offset) per record."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
        max_request_size=max_request_size, request_timeout_ms=60_000,
    )
    await producer.start()
    start = time.perf_counter()
    try:
        futures = []
        for i, (topic, key, value) in enumerate(records):
            if rate:
                delay = start + i / rate - time.perf_counter()
                if delay > 0.002:
                    await asyncio.sleep(delay)
            futures.append(await producer.send(topic, value, key=key))
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.topic, m.partition, m.offset) for m in metadata]


@dataclass
class Collected:
    scored: dict[str, dict[str, Any]] = field(default_factory=dict)
    scored_total: int = 0
    dead: dict[tuple[str, int, int], dict[str, Any]] = field(default_factory=dict)
    dead_total: int = 0
    raw_values: list[bytes] = field(default_factory=list)
    redelivered: set[str] = field(default_factory=set)
    first_scored_at: dict[str, float] = field(default_factory=dict)
    """Each id's first scored record: its Kafka timestamp (s), i.e. when the worker built it for sending."""

    def dead_reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.dead.values():
            out[d["reason"]] = out.get(d["reason"], 0) + 1
        return out


class Collector:
    """Reads ``scored`` and the DLQ from their beginning in the background (reconnecting through broker
    restarts); ``wait`` polls a condition."""

    def __init__(self, bootstrap: str, topics: Topics, *, keep_raw: bool = False) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.keep_raw = keep_raw
        self.out = Collected()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        parts = [TopicPartition(self.topics.scored, p) for p in range(PARTITIONS)]
        parts.append(TopicPartition(self.topics.dead_letter, 0))
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 << 20, fetch_max_bytes=16 << 20,
        )
        await consumer.start()
        try:
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            while True:
                try:
                    batches = await consumer.getmany(timeout_ms=300)
                except KafkaError:
                    await asyncio.sleep(0.5)  # broker restarting: the consumer reconnects by itself
                    continue
                for tp, messages in batches.items():
                    for m in messages:
                        self._take(tp.topic, m.value, m.timestamp / 1000.0)
        finally:
            await consumer.stop()

    def _take(self, topic: str, value: bytes, stamp_s: float) -> None:
        if self.keep_raw:
            self.out.raw_values.append(value)
        record = orjson.loads(value)
        if topic == self.topics.scored:
            if record["transaction_id"] in self.out.scored:
                self.out.redelivered.add(record["transaction_id"])
            else:
                self.out.first_scored_at[record["transaction_id"]] = stamp_s
            self.out.scored[record["transaction_id"]] = record
            self.out.scored_total += 1
        else:
            self.out.dead[(record["topic"], record["partition"], record["offset"])] = record
            self.out.dead_total += 1

    async def wait(
        self, done: Callable[[Collected], bool], timeout_s: float, what: str = "",
        *, worker: WorkerProcess | None = None,
    ) -> Collected:
        """Poll ``done``; fail at once if ``worker`` exited (rather than at the timeout)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done(self.out):
                return self.out
            if worker is not None and not worker.alive():
                raise AssertionError(f"worker {worker.pid} exited while waiting for {what}:\n{worker.tail(30)}")
            await asyncio.sleep(0.25)
        raise AssertionError(
            f"timed out after {timeout_s:.0f}s waiting for {what}: {len(self.out.scored)} scored ids "
            f"({self.out.scored_total} records), {len(self.out.dead)} dead letters"
        )


async def group_caught_up(bootstrap: str, group: str, topic: str) -> bool:
    """True when the consumer group committed every partition of ``topic`` to its end."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(parts)
        return all(ends[tp] == 0 or (tp in committed and committed[tp].offset >= ends[tp]) for tp in parts)
    finally:
        await consumer.stop()
        await admin.close()


async def wait_caught_up(bootstrap: str, group: str, topic: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if await group_caught_up(bootstrap, group, topic):
                return
        except KafkaError:
            pass
        await asyncio.sleep(0.5)
    raise AssertionError(f"group {group} did not commit {topic} to its end in {timeout_s:.0f}s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def original(dead: dict[str, Any]) -> bytes:
    return base64.b64decode(dead["original_b64"])


async def redis_contents(redis_url: str) -> bytes:
    """Every key and value in Redis as one blob (strings, hashes, sets, sorted sets, lists), so a test can
    search it for what must never be stored in clear."""
    client: aioredis.Redis = aioredis.Redis.from_url(redis_url, decode_responses=False)
    parts: list[Any] = []
    try:
        async for key in client.scan_iter(count=1000):
            parts.append(key)
            raw_kind = await client.type(key)
            kind = raw_kind.decode() if isinstance(raw_kind, bytes) else str(raw_kind)
            if kind == "string":
                parts.append(await client.get(key) or b"")
            elif kind == "hash":
                for field_, value in (await client.hgetall(key)).items():
                    parts += [field_, value]
            elif kind == "zset":
                parts += list(await client.zrange(key, 0, -1))
            elif kind == "set":
                parts += list(await client.smembers(key))
            elif kind == "list":
                parts += await client.lrange(key, 0, -1)
    finally:
        await client.aclose()
    return b"\n".join(parts)


def explain_difference(
    history: History, probes: Sequence[TransactionEvent], online: npt.NDArray[np.float64],
    offline: npt.NDArray[np.float64], redelivered: set[str],
) -> str:
    """Which probe (card) differs most, on which features, and whether its transactions were redelivered."""
    rel = np.abs(online - offline) / np.maximum(1.0, np.maximum(np.abs(online), np.abs(offline)))
    rel = np.where(np.isnan(rel), np.inf, rel)
    row = int(np.argmax(rel.max(axis=1)))
    card = probes[row].card_ref
    cols = np.flatnonzero(rel[row] > 1e-6)
    mine = [r["transaction_id"] for r in history.tx if HASHER.reference(r["card_id"]) == card]
    bad_rows = int((rel.max(axis=1) > 1e-6).sum())
    lines = [f"{bad_rows} of {len(probes)} probes differ; worst card {card}: {len(mine)} transactions, "
             f"{len(set(mine) & redelivered)} of them redelivered ({len(redelivered)} redelivered overall)"]
    lines += [f"  {FEATURE_LIST.names[c]}: online {online[row, c]!r} offline {offline[row, c]!r}" for c in cols[:12]]
    return "\n".join(lines)
