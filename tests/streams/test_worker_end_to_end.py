"""The walking skeleton on real services: produce → a real worker process → scored record / DLQ."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from features import FEATURE_LIST
from fraudstream.settings import Topics
from schemas import ScoredTransaction
from scoring.testing.model_factory import export_model
from tests.streams.helpers import OutputReader, WorkerProcess, produce, start_worker, unique, worker_env

pytestmark = pytest.mark.integration
TOPICS = Topics()


@pytest.fixture(scope="module")
def model_backend(tmp_path_factory: pytest.TempPathFactory) -> str:
    repo = tmp_path_factory.mktemp("models")
    export_model(repo, feature_names=FEATURE_LIST.names, feature_hash=FEATURE_LIST.hash)
    return f"local://{repo / 'fraud_dnn'}"


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str, model_backend: str
) -> Iterator[WorkerProcess]:
    home = tmp_path_factory.mktemp("worker-home")
    env = worker_env(home, kafka_bootstrap, redis_url, model_backend, FRAUD_APP_ID=unique("e2e"))
    process = start_worker(env, home / "worker.log")
    assert process.wait_ready(timeout_s=120), process.tail()
    yield process
    process.stop()


def transaction(tx_id: str, card: str, amount: float, minutes: int = 0) -> bytes:
    when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return json.dumps({
        "transaction_id": tx_id, "card_id": card, "terminal_id": "term-1", "amount": amount,
        "currency": "EUR", "event_time": when.isoformat().replace("+00:00", "Z"),
    }).encode()


async def test_transactions_are_scored_and_bad_records_dead_lettered(
    worker: WorkerProcess, kafka_bootstrap: str
) -> None:
    run = unique("e2e")
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
    reasons = sorted(d["reason"] for d in out.dead_ids(run))
    assert reasons == ["decode:json", "validation:amount:greater_than_equal", "validation:card_id:missing"]
    assert all(d["topic"] == TOPICS.transactions and d["offset"] >= 0 for d in out.dead_ids(run))


async def test_a_redelivered_transaction_does_not_change_its_features(
    worker: WorkerProcess, kafka_bootstrap: str, redis_url: str
) -> None:
    """Sending the same transaction id again (as a redelivery would) yields the same score."""
    run = unique("redeliver")
    first = [(TOPICS.transactions, b"card-r", transaction(f"{run}-{i}", "card-r", 20.0 + i, i)) for i in range(5)]
    async with OutputReader(kafka_bootstrap, TOPICS) as reader:
        await produce(kafka_bootstrap, first)
        out = await reader.read_until(lambda o: sum(k.startswith(run) for k in o.scored) >= 5, timeout_s=60)
        before = {k: v["score"] for k, v in out.scored.items() if k.startswith(run)}
        count = out.scored_count
        await produce(kafka_bootstrap, first[2:3])
        out = await reader.read_until(lambda o: o.scored_count >= count + 1, timeout_s=60)
    assert out.scored_count == count + 1
    assert len(before) == 5, worker.tail()
    again = out.scored[f"{run}-2"]
    assert again["score"] == pytest.approx(before[f"{run}-2"], abs=0)


def test_worker_log_has_no_tracebacks(worker: WorkerProcess) -> None:
    assert "Traceback" not in worker.tail(400), worker.tail(80)
