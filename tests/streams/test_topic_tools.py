"""Tools for the consumers and operators of the topics, on the real stack with a real worker:
``fraudstream tail``, Kafka's own console consumer from the cached jars, ``fraudstream schemas export``
against records the system produced, and the ``fraudstream dlq`` repair loop (bad records → counted by
reason → exported → fixed → resubmitted → scored)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from config.kafka import ensure_topics
from config.settings import Topics
from fraudstream.stack import kafka
from fraudstream.workers import WorkerProcess
from scoring.testing.model_factory import export_model
from tests.fixtures.topics import produce, run_id
from tests.fixtures.workers import launch, worker_env

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Env:
    bootstrap: str
    redis_url: str
    topics: Topics
    home: Path

    def vars(self) -> dict[str, str]:
        topics = {f"FRAUD_TOPICS__{k.upper()}": v for k, v in self.topics.model_dump().items()}
        return {**os.environ, "FRAUD_HOME": str(self.home), "FRAUD_KAFKA_BOOTSTRAP": self.bootstrap,
                "FRAUD_REDIS_URL": self.redis_url, "TF_CPP_MIN_LOG_LEVEL": "2", **topics}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fraudstream", *args], env=self.vars(), capture_output=True,
                              text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str) -> Env:
    run = run_id("tools")
    topics = Topics(transactions=f"{run}-tx", scored=f"{run}-scored", dead_letter=f"{run}-dlq",
                    labels=f"{run}-labels", retrain_requests=f"{run}-retrain", retrain_status=f"{run}-status",
                    drift_alerts=f"{run}-alerts")
    asyncio.run(ensure_topics(kafka_bootstrap, dict.fromkeys(topics.model_dump().values(), 2)))
    return Env(kafka_bootstrap, redis_url, topics, tmp_path_factory.mktemp("tools-home"))


@pytest.fixture(scope="module")
def worker(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    from features import FEATURE_LIST

    repo = tmp_path_factory.mktemp("tools-models")
    export_model(repo, feature_names=FEATURE_LIST.names, feature_hash=FEATURE_LIST.hash)
    process = launch(
        worker_env(env.home, env.bootstrap, env.redis_url, f"local://{repo / 'fraud_dnn'}", topics=env.topics,
                   FRAUD_APP_ID=run_id("tools-worker"), FRAUD_CARD_HASH_SECRET=run_id("secret")),
        env.home / "worker.log")
    assert process.wait_ready(timeout_s=180), process.tail()
    yield process
    process.stop()


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_all(env: Env, topic: str) -> list[dict[str, Any]]:
    result = env.run("tail", topic, "--from-beginning", "--to-end")
    assert result.returncode == 0, result.stderr
    return lines(result.stdout)


def read_unmasked(env: Env, topic: str) -> list[Any]:
    """The values as the system wrote them (``tail`` masks card ids, which would fail their schema)."""
    from fraudstream.topictools.tail import TailOptions, tail

    values: list[Any] = []
    options = TailOptions(topic=topic, from_beginning=True, to_end=True, mask_card_numbers=False)
    asyncio.run(tail(env.bootstrap, options, lambda line: values.append(line["value"])))
    return values


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


# --- tail ------------------------------------------------------------------------------------------
def test_tail_prints_each_kind_of_record_as_a_json_line(env: Env) -> None:
    topic = run_id("tail-kinds")
    asyncio.run(ensure_topics(env.bootstrap, {topic: 1}))
    binary = bytes(range(256))
    asyncio.run(produce(env.bootstrap, [
        (topic, b"k1", b'{"transaction_id": "a", "card_id": "4111111111111111", "score": 0.1234567890123456}'),
        (topic, None, "plain text, not JSON ✓".encode()),
        (topic, b"\xff\xfe", binary),
        (topic, b"k4", b'{"n": 5}'),
        (topic, b"k5", b'{"n": 6}'),
    ]))
    result = env.run("tail", topic, "--from-beginning", "--max", "4")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    records = lines(result.stdout)
    assert [r["offset"] for r in records] == [0, 1, 2, 3]  # stops after --max
    first, text, raw, last = records
    assert first["topic"] == topic and first["partition"] == 0 and first["key"] == "k1"
    assert first["value_format"] == "json" and first["value"]["transaction_id"] == "a"
    assert first["value"]["card_id"] == "[redacted]"  # no card number on a terminal
    assert first["value"]["score"] == 0.1234567890123456  # numbers are not mistaken for card numbers
    assert datetime.fromisoformat(first["timestamp"]).tzinfo is not None and first["timestamp_ms"] > 0
    assert text["value_format"] == "text" and text["value"] == "plain text, not JSON ✓" and text["key"] is None
    assert raw["value_format"] == "base64" and base64.b64decode(raw["value"]) == binary  # byte for byte
    assert raw["key_format"] == "base64" and base64.b64decode(raw["key"]) == b"\xff\xfe"
    assert last["value"] == {"n": 5}
    assert "4 records read" in result.stderr


def test_tail_from_the_end_shows_only_new_records_and_stops_on_ctrl_c(env: Env) -> None:
    topic = run_id("tail-follow")
    asyncio.run(ensure_topics(env.bootstrap, {topic: 2}))
    asyncio.run(produce(env.bootstrap, [(topic, b"old", b'{"old": true}')]))
    process = subprocess.Popen([sys.executable, "-m", "fraudstream", "tail", topic], env=env.vars(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert process.stderr is not None and process.stdout is not None
        assert "from the end" in process.stderr.readline()
        time.sleep(3.0)  # its positions are taken when it starts
        asyncio.run(produce(env.bootstrap, [(topic, b"a", b'{"new": 1}'), (topic, b"b", b'{"new": 2}')]))
        seen = [json.loads(process.stdout.readline()), json.loads(process.stdout.readline())]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert sorted(r["value"]["new"] for r in seen) == [1, 2] and not out.strip()
    assert process.returncode == 0 and "Traceback" not in err and "2 records read" in err, err


def test_kafka_console_consumer_from_the_cached_jars_reads_a_record(env: Env) -> None:
    topic = run_id("console")
    asyncio.run(ensure_topics(env.bootstrap, {topic: 1}))
    asyncio.run(produce(env.bootstrap, [(topic, b"card-1", b'{"transaction_id": "console-1"}')]))
    libs = kafka.ensure_jars(kafka.default_jar_cache())
    assert (libs / f"kafka-tools-{kafka.KAFKA_VERSION}.jar").exists()
    # The command the README documents.
    result = subprocess.run(
        ["java", "-cp", f"{libs}/*", "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server",
         env.bootstrap, "--topic", topic, "--from-beginning", "--max-messages", "1", "--property", "print.key=true"],
        capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'card-1\t{"transaction_id": "console-1"}' in result.stdout
    assert "Processed a total of 1 messages" in result.stderr


# --- schemas ---------------------------------------------------------------------------------------
def test_exported_schemas_validate_the_records_the_system_produces(env: Env, worker: WorkerProcess,
                                                                   tmp_path: Path) -> None:
    # no warm-up: the schemas are the subject, and loading 38 days of history took 95 s of a 120 s limit
    # on a loaded machine
    sim = env.run("simulate", "--count", "300", "--invalid-share", "0.05", "--label-delay-hours", "0",
                  "--warm-up-days", "0", "--id-prefix", run_id("schema"))
    assert sim.returncode == 0, sim.stderr
    produced = json.loads(sim.stdout.splitlines()[-1])
    asyncio.run(_publish_alert_retrain_request_and_status(env))
    t = env.topics
    wait_for(lambda: len(read_all(env, t.scored)) + len(read_all(env, t.dead_letter)) >= produced["transactions"],
             120, "every transaction scored or dead-lettered")

    result = env.run("schemas", "export", str(tmp_path / "cli"))
    assert result.returncode == 0, result.stderr
    module = subprocess.run([sys.executable, "-m", "schemas.export", str(tmp_path / "module")], capture_output=True,
                            text=True, check=False)
    assert module.returncode == 0 and len(module.stdout.splitlines()) == len(result.stdout.splitlines())
    index = json.loads((tmp_path / "cli" / "index.json").read_text())
    schemas = {}
    for default_topic, entry in index["topics"].items():
        schema = json.loads((tmp_path / "cli" / entry["schema"]).read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema" and schema["$id"] == entry["$id"]
        assert json.loads((tmp_path / "module" / entry["schema"]).read_text()) == schema
        jsonschema.Draft202012Validator.check_schema(schema)
        schemas[default_topic] = jsonschema.Draft202012Validator(schema)

    ours = {t.transactions: "transactions", t.labels: "fraud-labels", t.scored: "scored-transactions",
            t.dead_letter: "transactions-dlq", t.drift_alerts: "drift-alerts", t.retrain_requests: "retrain-requests",
            t.retrain_status: "retrain-status"}
    counts = {}
    for topic, default_topic in ours.items():
        records = read_unmasked(env, topic)
        assert records, topic
        counts[default_topic] = len(records)
        if default_topic == "transactions":
            # The simulator's malformed records (--invalid-share) are rejected by the schema where JSON
            # Schema can say why (e.g. a missing field); the currency list and the clock rules
            # are the worker's. The others pass.
            objects = [r for r in records if isinstance(r, dict)]
            good = [r for r in objects if "-bad-" not in str(r.get("transaction_id", ""))]
            bad = [r for r in objects if r not in good]
            missing = [r for r in bad if "terminal_id" not in r]
            assert missing and not any(schemas[default_topic].is_valid(r) for r in missing)
            records = good
        for record in records:
            schemas[default_topic].validate(record)
    assert counts["scored-transactions"] > 200 and counts["transactions-dlq"] >= 1, counts


async def _publish_alert_retrain_request_and_status(env: Env) -> None:
    """The monitor's and the trainer's own publishing code: a drift alert, a retrain request, a status."""
    from monitoring.drift import DriftConfig
    from monitoring.service import DriftMonitor, MonitorOptions
    from schemas.drift import DriftAlert
    from schemas.retrain import RetrainRequest
    from training.service import TrainerService
    from training.triggers import KafkaStatusPublisher

    monitor = DriftMonitor(MonitorOptions(bootstrap=env.bootstrap, topics=env.topics, model_dir=None,
                                          drift=DriftConfig()))
    await monitor.start()
    try:
        await monitor.publish_alert(DriftAlert(alert_id="a1", subject="score", window="5m", psi=0.31, ks=0.2,
                                               threshold=0.2, model_version=1, at=datetime.now(UTC)))
        request = await monitor.request_retrain("drift-monitor", "drift: score PSI 0.310 over 5m")
    finally:
        await monitor.stop()
    publisher = KafkaStatusPublisher(env.bootstrap, env.topics.retrain_status)
    await publisher.start()
    try:
        await TrainerService(lambda *_: None, publisher).submit(RetrainRequest(**request.model_dump()))
    finally:
        await publisher.close()


# --- dlq -------------------------------------------------------------------------------------------
def test_dlq_counts_exports_and_resubmits_fixed_records_which_are_then_scored(env: Env, worker: WorkerProcess,
                                                                            tmp_path: Path) -> None:
    t, run = env.topics, run_id("dlq")
    now = datetime.now(UTC).isoformat()
    refunds = [{"transaction_id": f"{run}-neg-{i}", "card_id": "4111111111111111", "terminal_id": f"{run}-term",
                "amount": -12.5 - i, "currency": "EUR", "event_time": now} for i in range(3)]
    broken = [(t.transactions, b"x", b'{"transaction_id": "' + run.encode() + b'-broken", "amount": ')]
    before = len(read_all(env, t.dead_letter))
    asyncio.run(produce(env.bootstrap, [(t.transactions, r["card_id"].encode(), orjson.dumps(r)) for r in refunds]
                        + broken))
    wait_for(lambda: len(read_all(env, t.dead_letter)) >= before + 4, 90, f"4 dead letters\n{worker.tail()}")

    summary = env.run("dlq", "--json")
    assert summary.returncode == 0, summary.stderr
    counts = json.loads(summary.stdout.splitlines()[-1])
    by_reason = {r["reason"]: r for r in counts["by_reason"]}
    negative = next(r for reason, r in by_reason.items() if reason.startswith("validation:amount"))
    assert negative["count"] >= 3 and negative["stages"] == {"validate": negative["count"]}
    assert negative["first"]["offset"] <= negative["last"]["offset"] and negative["last"]["failed_at"]
    by_stage = {s["stage"]: s for s in counts["by_stage"]}
    assert by_reason["decode:json"]["count"] >= 1 and by_stage["decode"]["count"] >= 1
    assert by_stage["validate"]["count"] >= 3 and by_stage["validate"]["last"]["failed_at"]
    assert sum(s["count"] for s in counts["by_stage"]) == counts["total"] - counts["unreadable"]
    table = env.run("dlq")
    assert table.returncode == 0 and negative["reason"] in table.stdout and "decode" in table.stdout

    shown = env.run("dlq", "show", "--reason", negative["reason"], "--max", "50")
    letters = [d for d in lines(shown.stdout) if str(d["original"].get("transaction_id", "")).startswith(run)]
    assert len(letters) == 3 and all(d["original"]["card_id"] == "[redacted]" for d in letters)

    fixes = tmp_path / "fixes.jsonl"
    exported = env.run("dlq", "export", "--reason", negative["reason"], str(fixes))
    assert exported.returncode == 0 and "masked card number" in exported.stderr, exported.stderr
    originals = [json.loads(line) for line in fixes.read_text().splitlines()]
    ours = [o for o in originals if str(o.get("transaction_id", "")).startswith(run)]
    assert sorted(o["amount"] for o in ours) == sorted(r["amount"] for r in refunds)
    # Still masked: refused, nothing sent.
    fixes.write_text("".join(json.dumps(o) + "\n" for o in ours))
    refused = env.run("dlq", "resubmit", str(fixes))
    assert refused.returncode == 1 and "still masked" in refused.stderr and "nothing was sent" in refused.stderr
    # The analyst's fix: the card back, the amount as a positive purchase.
    fixed = [{**o, "card_id": "4111111111111111", "amount": abs(o["amount"])} for o in ours]
    fixes.write_text("".join(json.dumps(o) + "\n" for o in fixed))
    dry = env.run("dlq", "resubmit", str(fixes), "--dry-run")
    assert dry.returncode == 0 and json.loads(dry.stdout.splitlines()[-1])["sent"] == 0
    sent = env.run("dlq", "resubmit", str(fixes))
    assert sent.returncode == 0, sent.stderr
    report = json.loads(sent.stdout.splitlines()[-1])
    assert report["sent"] == 3 and sorted(report["transaction_ids"]) == sorted(r["transaction_id"] for r in refunds)

    def scored() -> dict[str, dict[str, Any]]:
        return {r["value"]["transaction_id"]: r["value"] for r in read_all(env, t.scored)
                if str(r["value"]["transaction_id"]).startswith(run)}

    wait_for(lambda: len(scored()) == 3, 90, f"the resubmitted records scored\n{worker.tail()}")
    assert {tx: r["amount"] for tx, r in scored().items()} == {o["transaction_id"]: o["amount"] for o in fixed}
    assert all("4111111111111111" not in json.dumps(r) for r in scored().values())
