"""Hostile input through the real worker: hypothesis-generated records plus a hand-written nasty corpus.

Promise: every record read is either scored or dead-lettered with a specific reason; the worker never
crashes (same pid at the end) and its memory stays bounded. The accounting is by Kafka position: a record's
(topic, partition, offset) is in the DLQ, or the record decodes to a transaction whose id was scored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraudstream.stack import LocalStack
from schemas.common import CURRENCIES
from tests.fixtures.corpus import CORPUS_COPIES, MAX_MESSAGE, NOW, base, corpus_copies, nasty_corpus, unaccounted
from tests.fixtures.topics import Collector, private_topics, produce, wait_caught_up
from tests.fixtures.workers import launch, rss_mb, wait_ready, worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

TOTAL = 10_000
HYPOTHESIS_EXAMPLES = 2_500
RSS_GROWTH_LIMIT_MB = 40.0  # peak RSS (sampled through the run) above the RSS after the warm-up: 20-26 MB seen
RSS_SAMPLE_S = 0.05  # a run on a quiet machine takes ~2 s from warm-up to caught up: 40 samples
SPECIFIC_REASON = re.compile(r"^(decode:(empty|oversized|utf8|json)|validation:[A-Za-z0-9_.]+:[a-z_]+"
                             r"|duplicate:transaction_id:conflict)$")


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = SCALARS | st.lists(SCALARS, max_size=3) | st.dictionaries(st.text(max_size=6), SCALARS, max_size=3)
IDENT = st.text(alphabet="ABCdef0123456789_.:-", min_size=1, max_size=24)


def _records(run: str) -> st.SearchStrategy[bytes]:
    times = st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2200, 1, 1),
                         timezones=st.sampled_from([UTC, None, timezone(timedelta(hours=-11))]))
    field_values = {
        "card_id": IDENT | JSON_VALUES,
        "terminal_id": IDENT | JSON_VALUES,
        "amount": st.floats(min_value=0.01, max_value=10_000) | st.floats() | st.integers() | JSON_VALUES,
        "currency": st.sampled_from(sorted(CURRENCIES)) | st.text(max_size=5),
        "event_time": times.map(lambda d: d.isoformat()) | st.integers() | JSON_VALUES,
        "latitude": st.floats(-90, 90) | st.floats(),
        "longitude": st.floats(-180, 180) | st.floats(),
    }

    @st.composite
    def record(draw: st.DrawFn) -> bytes:
        out: dict[str, Any] = {"transaction_id": f"{run}-h{draw(st.integers(0, 10**12))}"}
        for name, strategy in field_values.items():
            if draw(st.integers(0, 9)) == 0:
                continue  # a missing key now and then
            out[name] = draw(strategy)
        if draw(st.integers(0, 19)) == 0:
            out[draw(st.text(min_size=1, max_size=10))] = draw(SCALARS)  # an unknown field
        raw = json.dumps(out, allow_nan=True).encode()
        mutate = draw(st.integers(0, 9))
        if mutate == 0:  # truncated
            raw = raw[: draw(st.integers(0, len(raw)))]
        elif mutate == 1:  # one byte replaced
            i = draw(st.integers(0, len(raw) - 1))
            raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1:]
        return raw

    return record()


def generated(run: str, count: int) -> list[bytes]:
    """``count`` hypothesis-generated records (derandomised: the same run is the same input)."""
    out: list[bytes] = []

    @settings(max_examples=count, database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(_records(run))
    def collect(raw: bytes) -> None:
        out.append(raw)

    collect()
    return out


NASTY_VALUES: dict[str, list[Any]] = {
    "amount": [0, -0.0, -1, 1e-300, 1_000_000, 1_000_000.01, 2**63, -(2**63), "1e3", True, None, [], {}],
    "card_id": ["", " ", "4111-1111", "é", "a" * 64, "a" * 65, 0, None, ["x"], "\u0000"],
    "terminal_id": ["", "T/1", "T 1", 7, None],
    "event_time": ["2000-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z",
                   "1970-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-01-01T00:00:00", 0, -1, 1e12, None],
    "currency": ["eur", "", "EURO", None, 978],
    "latitude": [90.0001, -90.0001, 1e308, None, "N"],
    "schema_version": [0, 1, 2, -1, "1"],
}


def mutated(run: str, count: int, seed: int = 7) -> list[bytes]:
    """Fast seeded mutations of valid transactions: about half stay valid (and are scored), the rest get
    one or two nasty field values, a dropped key or a stray one."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        record = base(f"{run}-m{i}", card_id=f"card-{rng.randrange(500)}", terminal_id=f"T-{rng.randrange(50)}",
                      amount=round(rng.uniform(0.01, 5000), 2),
                      event_time=(NOW - timedelta(seconds=rng.uniform(0, 30 * 86_400))).isoformat())
        for _ in range(rng.choice((0, 0, 0, 1, 2))):
            name = rng.choice(sorted(NASTY_VALUES))
            record[name] = rng.choice(NASTY_VALUES[name])
        if rng.random() < 0.03:
            del record[rng.choice(sorted(record))]
        if rng.random() < 0.02:
            record[f"x{rng.randrange(5)}"] = 1
        out.append(json.dumps(record, allow_nan=True).encode())
    return out


def hostile_values(run: str) -> list[bytes]:
    """``TOTAL`` records: hypothesis records and seeded mutations, with the corpus copies spread over the
    run — the first at the start (in the warm-up), the others later on, after the memory baseline."""
    copies = [corpus_copies(run, 1, first=k) for k in range(CORPUS_COPIES)]
    body = generated(run, HYPOTHESIS_EXAMPLES)
    body += mutated(run, TOTAL - len(body) - sum(map(len, copies)))
    values = list(copies[0])
    step = len(body) // (CORPUS_COPIES - 1)
    for k in range(1, CORPUS_COPIES):
        values += body[(k - 1) * step : k * step if k < CORPUS_COPIES - 1 else len(body)] + copies[k]
    copy = CORPUS_COPIES
    while len(values) < TOTAL:  # hypothesis may stop early when it has explored the strategy
        values += corpus_copies(run, 1, first=copy)
        copy += 1
    return values


async def sample_rss(pid: int, samples: list[float]) -> None:
    """The worker's RSS every ``RSS_SAMPLE_S`` until cancelled (or the process is gone)."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        while True:
            samples.append(rss_mb(pid))
            await asyncio.sleep(RSS_SAMPLE_S)


async def test_ten_thousand_hostile_records_are_each_scored_or_dead_lettered(
    local_stack: LocalStack, kafka_bootstrap: str, redis_url: str, local_backend: str, tmp_path: Path
) -> None:
    run, topics = await private_topics(kafka_bootstrap, "fuzz")
    corpus = nasty_corpus(f"{run}-labels")
    values = hostile_values(run)
    keys = [b"fuzz", None, b"\xff\xfe", b"k" * 1000]
    records = [(topics.transactions, keys[i % len(keys)], v) for i, v in enumerate(values)]

    env = worker_env(tmp_path, kafka_bootstrap, redis_url, local_backend, topics, run)
    worker = launch(env, tmp_path / "worker.log")
    samples: list[float] = []
    sampler: asyncio.Task[None] | None = None
    async with Collector(kafka_bootstrap, topics) as collector:
        try:
            await wait_ready(worker)
            warm = await produce(kafka_bootstrap, records[:1000], max_request_size=2 << 20)
            await collector.wait(lambda o: len(o.dead) + len(o.scored) >= 900, 120, "the warm-up records")
            baseline = rss_mb(worker.pid)
            sampler = asyncio.create_task(sample_rss(worker.pid, samples))
            positions = warm + await produce(kafka_bootstrap, records[1000:], max_request_size=2 << 20)
            # The label agent gets the corpus too (none of it is a valid label): all dead-lettered.
            label_positions = await produce(
                kafka_bootstrap, [(topics.labels, b"fuzz", v) for v in corpus], max_request_size=2 << 20
            )
            await wait_caught_up(kafka_bootstrap, run, topics.transactions, timeout_s=300)
            await wait_caught_up(kafka_bootstrap, run, topics.labels, timeout_s=120)
            assert worker.alive(), worker.tail(60)
        finally:
            if sampler is not None:
                sampler.cancel()
            pid_alive = worker.alive()
            worker.stop()
        out = await collector.wait(
            lambda o: unaccounted(values, positions, o.scored, o.dead) == [] and set(label_positions) <= o.dead.keys(),
            60, "every record accounted for",
        )
    assert pid_alive, worker.tail(60)
    assert "Traceback" not in worker.log.read_text(errors="replace"), worker.tail(80)
    unspecific = {d["reason"] for d in out.dead.values() if not SPECIFIC_REASON.match(d["reason"])}
    assert not unspecific, f"dead letters without a specific reason: {unspecific}"
    assert all(len(d["original_b64"]) <= 4 * MAX_MESSAGE // 3 + 4 for d in out.dead.values())
    peak = max(samples)
    print(f"{len(values)} records: {len(out.scored)} scored ids, {len(out.dead)} dead letters, "
          f"reasons {sorted(out.dead_reasons().items(), key=lambda kv: -kv[1])[:12]}; RSS after the "
          f"warm-up {baseline:.1f} MB, peak {peak:.1f} MB, last {samples[-1]:.1f} MB ({len(samples)} samples)")
    assert len(samples) >= 10, "too few memory samples to speak of a peak"
    assert peak - baseline <= RSS_GROWTH_LIMIT_MB, f"RSS grew from {baseline:.1f} MB to {peak:.1f} MB"


