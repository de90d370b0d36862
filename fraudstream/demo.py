"""``fraudstream demo``: the main job end to end on the local stack.

1. The local stack (Kafka KRaft + redis-server), started if it is not up.
2. A first model if the repository has none: ``fraudstream train --input sim:300000?… --quick`` in its own
   process, on the history of the same simulated population the demo then streams (its output goes to
   ``<home>/logs/train-first-model.log``; one line here). Its drift reference therefore describes the
   traffic it scores.
3. A real worker process.
4. The online features warmed with the population's last 38 days (``fraudstream.sources.warmup``): the
   traffic is scored on the state a long-running worker has, which is what the model was trained on.
5. ``--transactions`` simulated transactions (with their labels as they become known and a few malformed
   records): a backlog offered at once (the worker's capacity on this machine, now), then the rest at half
   that rate (the steady phase; or all of them at ``--rate``). The demo's own consumer reads every scored
   record and dead letter and times each transaction from its hand-over to the Kafka producer to its
   scored record.
6. A summary (``fraudstream.demo_report``): produced = scored + dead-lettered, throughput, latency, the
   fraud share of the traffic next to the decisions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from config.kafka import assign_at_end
from config.settings import Settings, load_settings
from features.simulator import SimulatedTransaction, SimulationConfig, Simulator, interleave_labels
from fraudstream.demo_report import DemoReport, PhaseReport
from fraudstream.sources.producer import OutboundRecord, first_transactions, produce
from fraudstream.sources.warmup import WARM_UP_DAYS, take_history, warm_up, with_warm_up
from fraudstream.stack import LocalStack
from fraudstream.stack.process import stop
from fraudstream.workers import spawn_worker

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

POPULATION = SimulationConfig(count=0)
"""The demo's population: the simulator's defaults (seed 0, 2,000 cards, 4,000 terminals), which are the
population of the trainer's default history too."""
BACKLOG_MAX = 5000
STEADY_SHARE = 0.5
"""The steady phase is offered at this share of the rate the backlog was scored at."""
Progress = Callable[[str], None]


class DemoError(RuntimeError):
    """The demo cannot run; the message says why."""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def has_model(settings: Settings) -> bool:
    base = settings.model_repository / settings.model_name
    return base.is_dir() and any(p.name.isdigit() for p in base.iterdir())


def history_spec(population: SimulationConfig = POPULATION) -> str:
    """The trainer's ``sim:`` input for ``population``: its history (events seed 1), 75 days long."""
    from training.simulated import DEFAULT_HISTORY_TRANSACTIONS, HISTORY_EVENTS_SEED, SimulatedHistory

    history = replace(population, count=DEFAULT_HISTORY_TRANSACTIONS, events_seed=HISTORY_EVENTS_SEED)
    return SimulatedHistory(history).spec


def train_first_model(settings: Settings, log: Path, *, spec: str | None = None,
                      progress: Progress = _progress) -> dict[str, Any]:
    """Train, export and promote a first model with the trainer's quick path, in its own process; its
    output (the trainer's progress, TensorFlow's start-up messages, the JSON result) goes to ``log``."""
    spec = spec or history_spec()
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, FRAUD_HOME=str(settings.home), TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "fraudstream", "train", "--input", spec, "--quick", "--json"]
    progress(f"no model yet: training a first one on {spec} (about a minute; log {log})…")
    started = time.monotonic()
    with log.open("w") as out:
        out.write(" ".join(command) + "\n")
        out.flush()
        result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=out, text=True, check=False)
        out.write(result.stdout)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        msg = f"training the first model failed (exit {result.returncode}); the end of {log}:\n{tail}"
        raise DemoError(msg)
    summary: dict[str, Any] = json.loads(lines[-1])
    seconds = time.monotonic() - started
    metrics = summary.get("metrics") or {}
    progress(f"first model: version {summary.get('version')}, AUC {metrics.get('auc_roc', 0):.3f}, "
             f"AP {metrics.get('average_precision', 0):.3f} on its test week ({seconds:.0f} s)")
    return {"version": summary.get("version"), "history": spec, "metrics": metrics, "seconds": round(seconds, 1),
            "training_window": summary.get("training_window"), "holdout_window": summary.get("holdout_window")}


class _Traffic:
    """What the demo knows about its own transactions: the truth (fraud or not), when and in which phase
    each was handed to the producer, and every outcome read back."""

    def __init__(self, settings: Settings, prefix: str, report: DemoReport) -> None:
        self.settings = settings
        self.prefix = prefix
        self.report = report
        self.frauds: set[str] = set()
        self.phase = report.phases[0]
        self.sent_at: dict[str, tuple[float, PhaseReport]] = {}
        self.latencies: dict[str, list[float]] = {}
        self._seen: set[str] = set()

    def note(self, tx: SimulatedTransaction) -> None:
        if tx.is_fraud:
            self.frauds.add(str(tx.payload["transaction_id"]))

    def sent(self, record: OutboundRecord) -> None:
        if not record.counts_as_transaction:
            return
        now = time.time()
        phase = self.phase
        phase.first_sent = phase.first_sent or now
        # A deliberately malformed record is dead-lettered, not timed.
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
            self.sent_at[str(orjson.loads(record.value)["transaction_id"])] = (now, phase)

    @property
    def outcomes(self) -> int:
        return self.report.scored + self.report.dead_lettered

    async def collect(self, consumer: AIOKafkaConsumer) -> None:
        """Read scored records and dead letters of this run until cancelled."""
        topics = self.settings.topics
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            received = time.time()
            for tp, messages in batches.items():
                for message in messages:
                    if message.value is not None:
                        self._outcome(tp.topic == topics.scored, orjson.loads(message.value), received)

    def _outcome(self, scored: bool, record: dict[str, Any], received: float) -> None:
        report = self.report
        if scored:
            tx_id = str(record["transaction_id"])
            if not tx_id.startswith(self.prefix) or tx_id in self._seen:
                return
            self._seen.add(tx_id)
            report.add_scored(record, is_fraud=tx_id in self.frauds)
            sent = self.sent_at.get(tx_id)
            if sent is not None:
                at, phase = sent
                phase.scored += 1
                phase.last_outcome = received
                self.latencies.setdefault(phase.name, []).append(1000.0 * (received - at))
        elif self.prefix.encode() in base64.b64decode(record["original_b64"]):
            report.dead_lettered += 1
            report.dlq_reasons[record["reason"]] = report.dlq_reasons.get(record["reason"], 0) + 1

    async def wait_for(self, outcomes: int, deadline: float, alive: Callable[[], bool]) -> None:
        while self.outcomes < outcomes:
            if not alive():
                msg = "the worker died during the demo; see its log"
                raise DemoError(msg)
            if time.monotonic() > deadline:
                msg = f"timed out: {self.outcomes:,} of {outcomes:,} transactions have an outcome"
                raise DemoError(msg)
            await asyncio.sleep(0.1)


async def stream_demo(settings: Settings, transactions: int, *, invalid_share: float, rate: float | None,
                      timeout_s: float, alive: Callable[[], bool], warm_up_days: float = WARM_UP_DAYS,
                      population: SimulationConfig = POPULATION, progress: Progress = _progress) -> DemoReport:
    """Warm the features with the population's past, then offer ``transactions`` and read every outcome.

    With ``rate``, every transaction is offered at that rate. Without, a backlog comes first (a quarter of
    the traffic, at most 5,000 transactions, offered at once: the worker's capacity here and now), then
    the rest at half the rate the backlog was scored at: the steady phase, whose latencies are the
    system's rather than a queue's.
    """
    steady = PhaseReport("steady", offered_rate_tps=rate)
    backlog_size = 0 if rate else min(BACKLOG_MAX, transactions // 4)
    phases = [PhaseReport("backlog"), steady] if backlog_size else [steady]
    report = DemoReport(phases=phases)
    prefix = f"demo-{uuid.uuid4().hex[:8]}"
    config, warm = with_warm_up(replace(population, count=transactions, invalid_share=invalid_share,
                                        id_prefix=prefix, entity_prefix=f"{prefix}-"), warm_up_days)
    traffic = _Traffic(settings, prefix, report)
    stream = interleave_labels(Simulator(config), end=time.time(), on_transaction=traffic.note)
    if warm:
        progress(f"warming the online features with the population's last {warm_up_days:g} days "
                 f"({warm:,} transactions, applied to Redis, not scored)…")
        warmed = await warm_up(settings, *take_history(stream, warm))
        report.warm_up = {"days": round(warmed.days, 1), "transactions": warmed.transactions,
                          "labels": warmed.labels, "seconds": round(warmed.seconds, 1)}
    topics = {"tx": settings.topics.transactions, "bad": settings.topics.transactions,
              "label": settings.topics.labels}
    records = (OutboundRecord(topics[k], key, value, counts_as_transaction=k != "label") for k, key, value in stream)
    deadline = time.monotonic() + timeout_s
    consumer = settings.kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    collector: asyncio.Task[None] | None = None
    try:
        await assign_at_end(consumer, settings.kafka, [settings.topics.scored, settings.topics.dead_letter])
        collector = asyncio.create_task(traffic.collect(consumer))
        for phase in phases:
            traffic.phase = phase
            count = backlog_size if phase is not steady else transactions - backlog_size
            if phase is steady and phase.offered_rate_tps is None:
                phase.offered_rate_tps = round(STEADY_SHARE * phases[0].throughput_tps, 1) or None
            offered = f"at {phase.offered_rate_tps:,.0f} tx/s" if phase.offered_rate_tps else "at once"
            progress(f"{phase.name}: offering {count:,} transactions {offered}…")
            sent = await produce(settings.kafka, first_transactions(records, count),
                                 rate=phase.offered_rate_tps, label=f"demo {phase.name}", on_sent=traffic.sent)
            phase.produced = sent.transactions
            report.produced += sent.transactions
            await traffic.wait_for(report.produced, deadline, alive)
            phase.finish(traffic.latencies.get(phase.name, []))
            progress(f"  {phase.name}: {phase.scored:,} scored at {phase.throughput_tps:,.0f} tx/s")
    finally:
        if collector is not None:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
        await consumer.stop()
    report.examples.sort(key=lambda r: -float(r["score"]))
    return report


def run_demo(transactions: int, *, keep_stack: bool = False, invalid_share: float = 0.005,
             rate: float | None = None, timeout_s: float | None = None,
             warm_up_days: float = WARM_UP_DAYS) -> DemoReport:
    begin = time.monotonic()
    settings = load_settings()
    stack = LocalStack(settings.home, topics=settings.topics,
                       transactions_partitions=settings.transactions_partitions)
    started_stack = stack.ensure_up("starting the local stack (Kafka KRaft + Redis)…")
    settings = load_settings()
    logs = settings.home / "logs"
    worker_pid: int | None = None
    model: dict[str, Any] | None = None
    try:
        if not has_model(settings):
            model = train_first_model(settings, logs / "train-first-model.log")
        worker_log = logs / "worker-demo.log"
        worker = spawn_worker({"FRAUD_HOME": str(settings.home), "FRAUD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                               "FRAUD_REDIS_URL": settings.redis_url}, worker_log)
        worker_pid = worker.pid
        _progress(f"worker starting (pid {worker_pid}, log {worker_log})…")
        if not worker.wait_ready(180):
            msg = f"the worker did not start; the end of its log:\n{worker.tail()}"
            raise DemoError(msg)
        report = asyncio.run(stream_demo(
            settings, transactions, invalid_share=invalid_share, rate=rate, warm_up_days=warm_up_days,
            timeout_s=timeout_s or 180.0 + transactions / 200.0, alive=worker.alive,
        ))
    finally:
        stop(worker_pid, timeout_s=20)
        if started_stack and not keep_stack:
            stack.down()
    report.model = model
    report.logs = {"worker": str(worker_log)}
    if model is not None:
        report.logs["trainer"] = str(logs / "train-first-model.log")
    report.elapsed_s = round(time.monotonic() - begin, 1)
    return report
