"""``fraudstream demo``: the main job end to end on the local stack.

Starts the stack if needed, trains a first model if the repository has none, starts a real worker process,
streams simulated traffic (with a few malformed records) and waits until every transaction produced is
either scored or dead-lettered; then prints a summary.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from fraudstream.settings import Settings, load_settings
from fraudstream.sources.producer import OutboundRecord, produce
from fraudstream.sources.simulator import SimulationConfig, Simulator, interleave_labels
from fraudstream.sources.topics import assign_at_end
from fraudstream.stack import LocalStack
from fraudstream.stack.process import is_alive, stop
from fraudstream.workers import spawn_worker


class DemoError(RuntimeError):
    """The demo cannot run; the message says why."""


@dataclass
class DemoReport:
    produced: int = 0
    scored: int = 0
    dead_lettered: int = 0
    elapsed_s: float = 0.0
    stream_s: float = 0.0
    throughput_tps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    decisions: dict[str, int] = field(default_factory=dict)
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    degraded: int = 0
    model_versions: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.produced == self.scored + self.dead_lettered


def has_model(settings: Settings) -> bool:
    base = settings.model_repository / settings.model_name
    return base.is_dir() and any(p.name.isdigit() for p in base.iterdir())


def train_first_model(settings: Settings) -> None:
    """Train, export and promote a first model with the trainer's quick path (its own process)."""
    env = dict(os.environ, FRAUD_HOME=str(settings.home))
    result = subprocess.run(
        [sys.executable, "-m", "fraudstream", "train", "--mapping", "fdh", "--quick"], env=env, check=False,
    )
    if result.returncode != 0:
        msg = "training the first model failed (see the trainer's output above)"
        raise DemoError(msg)


def _keep_example(examples: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """The three highest scores seen so far, plus the two latest ordinary records."""
    examples.append(record)
    if len(examples) > 5:
        examples.sort(key=lambda r: -float(r["score"]))
        del examples[3]


async def _collect(consumer: AIOKafkaConsumer, settings: Settings, prefix: str, report: DemoReport,
                   expected: asyncio.Future[int], timeout_s: float, alive: Callable[[], bool]) -> None:
    latencies: list[float] = []
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while time.monotonic() < deadline:
        if expected.done() and report.scored + report.dead_lettered >= expected.result():
            break
        if not alive():
            print("error: the worker died; see its log", file=sys.stderr)
            break
        batches = await consumer.getmany(timeout_ms=500, max_records=5000)
        for tp, messages in batches.items():
            for message in messages:
                if message.value is None:
                    continue
                record = orjson.loads(message.value)
                if tp.topic == settings.topics.scored:
                    tx_id = str(record["transaction_id"])
                    if not tx_id.startswith(prefix) or tx_id in seen:
                        continue
                    seen.add(tx_id)
                    report.scored += 1
                    report.decisions[record["decision"]] = report.decisions.get(record["decision"], 0) + 1
                    report.degraded += bool(record["degraded"])
                    version = str(record["model_version"])
                    report.model_versions[version] = report.model_versions.get(version, 0) + 1
                    latencies.append(float(record["latencies"]["end_to_end_ms"]))
                    _keep_example(report.examples, record)
                elif prefix.encode() in base64.b64decode(record["original_b64"]):
                    report.dead_lettered += 1
                    report.dlq_reasons[record["reason"]] = report.dlq_reasons.get(record["reason"], 0) + 1
    if latencies:
        latencies.sort()
        report.p50_ms = latencies[len(latencies) // 2]
        report.p99_ms = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]


async def stream_demo(settings: Settings, transactions: int, *, invalid_share: float, rate: float | None,
                      timeout_s: float, alive: Callable[[], bool]) -> DemoReport:
    report = DemoReport()
    prefix = f"demo-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await assign_at_end(consumer, settings.kafka_bootstrap, [settings.topics.scored, settings.topics.dead_letter])
        # A population sized so the traffic spans about 40 days (2 transactions per card per day): the
        # 30-day windows and the 7-day label delay then see the kind of history the model was trained on.
        cards = max(50, transactions // 80)
        simulator = Simulator(SimulationConfig(count=transactions, seed=7, invalid_share=invalid_share,
                                               cards=cards, terminals=2 * cards, id_prefix=prefix))
        topics = {"tx": settings.topics.transactions, "bad": settings.topics.transactions,
                  "label": settings.topics.labels}
        records = (OutboundRecord(topics[k], key, value, counts_as_transaction=k != "label")
                   for k, key, value in interleave_labels(simulator, end=time.time()))
        expected: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        collector = asyncio.create_task(_collect(consumer, settings, prefix, report, expected, timeout_s, alive))
        sent = await produce(settings.kafka_bootstrap, records, rate=rate, label="demo traffic")
        report.produced = sent.transactions
        expected.set_result(sent.transactions)
        await collector
        report.stream_s = time.monotonic() - started
        report.throughput_tps = report.produced / report.stream_s if report.stream_s else 0.0
    finally:
        await consumer.stop()
    report.examples.sort(key=lambda r: -float(r["score"]))
    return report


def run_demo(transactions: int, *, keep_stack: bool = False, invalid_share: float = 0.005,
             rate: float | None = None, timeout_s: float | None = None) -> DemoReport:
    begin = time.monotonic()
    settings = load_settings()
    stack = LocalStack(settings.home, topics=settings.topics,
                       transactions_partitions=settings.transactions_partitions)
    started_stack = stack.ensure_up("starting the local stack (Kafka KRaft + Redis)…")
    settings = load_settings()
    worker_pid: int | None = None
    try:
        if not has_model(settings):
            print("no model in the repository yet: training a first one on the FDH history…", file=sys.stderr)
            train_first_model(settings)
        worker_log = settings.home / "logs" / "worker-demo.log"
        worker = spawn_worker({"FRAUD_HOME": str(settings.home), "FRAUD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                               "FRAUD_REDIS_URL": settings.redis_url}, worker_log)
        worker_pid = worker.pid
        print(f"worker starting (pid {worker_pid}, log {worker_log})…", file=sys.stderr)
        if not worker.wait_ready(180):
            msg = f"the worker did not start; the end of its log:\n{worker.tail()}"
            raise DemoError(msg)
        report = asyncio.run(stream_demo(
            settings, transactions, invalid_share=invalid_share, rate=rate,
            timeout_s=timeout_s or 180.0 + transactions / 500.0, alive=worker.alive,
        ))
        if not is_alive(worker_pid):
            print("warning: the worker exited during the demo; see its log", file=sys.stderr)
    finally:
        stop(worker_pid, timeout_s=20)
        if started_stack and not keep_stack:
            stack.down()
    report.elapsed_s = time.monotonic() - begin
    return report


def summary_json(report: DemoReport) -> dict[str, Any]:
    data = asdict(report)
    data["complete"] = report.complete
    return data


def print_summary(report: DemoReport) -> None:
    ok = "yes" if report.complete else "NO"
    print("\nfraudstream demo summary")
    print("------------------------")
    print(f"transactions produced   {report.produced:>10,}")
    print(f"scored                  {report.scored:>10,}")
    print(f"dead-lettered           {report.dead_lettered:>10,}   {report.dlq_reasons}")
    print(f"produced = scored + dlq {ok:>10}")
    print(f"decisions               {report.decisions}")
    print(f"degraded (rules only)   {report.degraded:>10,}")
    print(f"model versions          {report.model_versions}")
    print(f"stream time             {report.stream_s:>10.1f} s  ({report.throughput_tps:,.0f} tx/s end to end)")
    print(f"batch latency p50 / p99 {report.p50_ms:>7.1f} / {report.p99_ms:.1f} ms (Kafka timestamp → publish)")
    print(f"total wall time         {report.elapsed_s:>10.1f} s")
    print("\nexamples (highest scores first):")
    for r in report.examples:
        reasons = ", ".join(f"{c['feature']} ({c['contribution']:+.2f})" for c in r["reason_codes"])
        print(f"  {r['transaction_id']:<22} {r['amount']:>9.2f} {r['currency']}  score {r['score']:.3f}  "
              f"{r['decision']:<8} reasons: {reasons or '-'}  rules: {r['rules_fired'] or '-'}")
