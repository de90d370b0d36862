"""``fraudstream bench soak``: a long run at a steady share of capacity, to see that nothing grows without bound.

It starts a stack of its own (``LocalStack`` in ``--home``, default ``<home>/soak``: its own Kafka and Redis,
so the figures are the soak's alone and nothing of another run is in Redis), measures the worker's saturation
throughput briefly with ``bench e2e``'s phase (or takes ``--rate``), then offers ``--share`` (50 %) of it
for ``--minutes``: simulated transactions on ``transactions`` and their labels on ``fraud-labels`` (each
transaction's label 7 simulated days later, as ``fraudstream simulate`` sends them), and a few invalid
records that must be dead-lettered. Every ``--interval-s`` (60) it records:

* the worker's RSS, Redis ``used_memory`` (and its key count, AOF size), the broker's log size;
* the consumer group's lag on ``transactions`` and ``fraud-labels`` (end offset − committed offset);
* latency from each transaction's send to its scored record's arrival here (p50, p99), scored records and
  dead letters in the interval, this machine's load average.

Its verdict per series is the least-squares slope over the second half of the run (the first half holds the
warm-up and the fill of what is bounded by design) against a stated bound (``BOUNDS``).

What is bounded, and by what: the feature state is one entry per card and per terminal, and the simulator
draws from a fixed population (2,000 cards, 4,000 terminals), so it plateaus once every entity was seen.
Each transaction id has an id record (``features/ids.py``) that expires ``dedup_horizon_s`` of wall clock
after it was first seen: that memory is rate × horizon, bounded but large with the default day (at 2,500
tx/s, 216 M records). The soak runs its worker with ``--dedup-horizon-s`` (default 60 s, the smallest the
settings allow), so that plateau is reached in the first minute and a leak elsewhere is not hidden under it.
The AOF grows until Redis rewrites it (``auto-aof-rewrite-min-size`` 2 GB, then at twice the rewritten
size) and the broker's log until its retention (168 h): both are reported, neither is judged.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from config.kafka import assign_at_end, delete_topics, ensure_topics
from config.settings import Settings, load_settings
from features.simulator import SimulationConfig, Simulator, interleave_labels
from fraudstream.bench.e2e import (
    Phase,
    _tx_id,
    bench_app_id,
    bench_worker_env,
    group_stable,
    machine_reference,
    model_backend_for,
    percentile,
    saturation,
    wait_ready,
)
from fraudstream.bench.ratios import HEADLINE_SHARE
from fraudstream.sources.producer import OutboundRecord, produce
from fraudstream.stack.manager import LocalStack
from fraudstream.stack.redis import purge_prefix
from fraudstream.workers import WorkerProcess, spawn_worker
from streams.app import faust_leftovers


@dataclass(frozen=True)
class Bound:
    """The largest slope (per minute) a series may keep over the run's second half."""

    per_min: float
    unit: str
    why: str


def bounds(offered_tps: float) -> dict[str, Bound]:
    """The verdict's bounds. Lag is judged against the offered load: a worker that does not keep up at
    ``offered_tps`` falls behind by a share of it every minute; one that keeps up has a lag that only
    wanders with the commit interval (faust commits every 2.8 s) and the fetch batches."""
    lag = round(offered_tps * 0.5, 1)
    return {
        "worker_rss_mb": Bound(1.0, "MB/min", "1 MB/min is 60 MB an hour: a leak of that size is a defect"),
        "redis_used_memory_mb": Bound(1.0, "MB/min", "the state is per card and terminal, the id records expire"),
        "lag_transactions": Bound(lag, "records/min", "half a second of the offered load per minute"),
        "lag_labels": Bound(lag, "records/min", "half a second of the offered load per minute"),
        "p99_ms": Bound(10.0, "ms/min", "the machine is shared: a p99 that drifts by more is a queue building"),
    }


def slope_per_min(minutes: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against ``minutes`` (NaN with fewer than two finite points)."""
    points = [(m, v) for m, v in zip(minutes, values, strict=True) if math.isfinite(v)]
    if len(points) < 2:
        return float("nan")
    x, y = np.asarray([p[0] for p in points]), np.asarray([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


MIN_POINTS = 3
"""A slope over fewer samples than this says nothing: the verdict is then ``None`` (a short smoke run)."""


def verdict(minutes: Sequence[float], values: Sequence[float], bound: Bound) -> dict[str, Any]:
    """The slope over the second half of the samples against ``bound``: ok True/False, None if too short."""
    half = len(minutes) // 2
    xs, ys = list(minutes[half:]), list(values[half:])
    slope = slope_per_min(xs, ys)
    points = sum(1 for v in ys if math.isfinite(v))
    ok = None if points < MIN_POINTS or math.isnan(slope) else bool(slope <= bound.per_min)
    return {"slope_per_min": None if math.isnan(slope) else round(slope, 3), "bound_per_min": bound.per_min,
            "unit": bound.unit, "points": points, "from_minute": round(xs[0], 2) if xs else None, "ok": ok,
            "why_this_bound": bound.why}


def verdicts(samples: Sequence[dict[str, Any]], offered_tps: float) -> dict[str, dict[str, Any]]:
    minutes = [s["minute"] for s in samples]
    return {name: verdict(minutes, [float(s[name]) for s in samples], bound)
            for name, bound in bounds(offered_tps).items()}


@dataclass(frozen=True)
class SoakOptions:
    minutes: float = 30.0
    interval_s: float = 60.0
    rate: float | None = None
    """Transactions per second to offer; None: ``share`` of the saturation throughput measured first."""
    share: float = HEADLINE_SHARE
    saturation_count: int = 20_000
    batch: int = 512
    dedup_horizon_s: float = 60.0
    invalid_share: float = 0.001
    drain_s: float = 300.0
    """How long the backlog left when the load stops may take to be scored (or dead-lettered)."""
    seed: int = 23
    keep_data: bool = False
    """Keep the stack's Kafka and Redis data after the run (30 minutes at 2,500 tx/s are several GB)."""


@dataclass
class Window:
    """What the reader saw since the last sample."""

    scored: int = 0
    dead: int = 0
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class Tally:
    sent_at: dict[bytes, float] = field(default_factory=dict)
    """Send time of each valid transaction not scored yet (popped on arrival, so it stays small)."""
    transactions: int = 0
    labels: int = 0
    invalid: int = 0
    scored: int = 0
    dead: int = 0
    window: Window = field(default_factory=Window)

    def on_sent(self, record: OutboundRecord) -> None:
        if not record.counts_as_transaction:
            self.labels += 1
        elif record.key == INVALID_KEY:
            self.invalid += 1
        else:
            self.transactions += 1
            self.sent_at[_tx_id(record.value)] = time.time()

    def take(self) -> Window:
        window, self.window = self.window, Window()
        return window


INVALID_KEY = b"bad"  # the key interleave_labels gives its invalid records


def soak_records(settings: Settings, config: SimulationConfig, stop_at: float) -> Iterator[OutboundRecord]:
    """The simulated stream (transactions, labels, invalid records), until ``stop_at`` (monotonic)."""
    topics = settings.topics
    for kind, key, value in interleave_labels(Simulator(config), end=0.0):
        if time.monotonic() >= stop_at:
            return
        if kind == "label":
            yield OutboundRecord(topics.labels, key, value, counts_as_transaction=False)
        else:
            yield OutboundRecord(topics.transactions, key, value)


async def read_results(settings: Settings, consumer: Any, tally: Tally, stop: asyncio.Event) -> None:
    """Scored records and dead letters as they come: latency per transaction, counts per window."""
    dlq = settings.topics.dead_letter
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
        now = time.time()
        for tp, messages in batches.items():
            if tp.topic == dlq:
                tally.dead += len(messages)
                tally.window.dead += len(messages)
                continue
            for m in messages:
                sent = tally.sent_at.pop(_tx_id(m.value or b'"transaction_id":""'), None)
                tally.scored += 1
                tally.window.scored += 1
                if sent is not None:
                    tally.window.latencies_ms.append((now - sent) * 1000)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tree_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except FileNotFoundError:  # a segment deleted or renamed meanwhile
                continue
    return total / 2**20


async def group_lag(settings: Settings, admin: Any, consumer: Any, group: str) -> dict[str, int]:
    """End offset − committed offset of ``group``, summed per topic (transactions, labels); a partition
    without a commit yet counts from 0."""
    from aiokafka import TopicPartition

    topics = [settings.topics.transactions, settings.topics.labels]
    described = await admin.describe_topics(topics)
    parts = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    ends = await consumer.end_offsets(parts)
    committed = await admin.list_consumer_group_offsets(group, partitions=parts)
    lag = dict.fromkeys(topics, 0)
    for tp in parts:
        done = committed.get(tp)
        lag[tp.topic] += max(0, ends[tp] - (done.offset if done is not None and done.offset >= 0 else 0))
    return lag


async def sample(settings: Settings, worker: WorkerProcess, tally: Tally, admin: Any, consumer: Any,
                 group: str, started: float) -> dict[str, Any]:
    window = tally.take()
    client = settings.redis.sync_client()
    try:
        memory, persistence, keyspace = client.info("memory"), client.info("persistence"), client.info("keyspace")
    finally:
        client.close()
    db = keyspace.get("db0") or {"keys": 0, "expires": 0}
    lag = await group_lag(settings, admin, consumer, group)
    return {
        "minute": round((time.monotonic() - started) / 60, 3),
        "worker_rss_mb": round(rss_mb(worker.pid), 1),
        "redis_used_memory_mb": round(memory["used_memory"] / 2**20, 2),
        "redis_keys": int(db["keys"]),
        "redis_keys_expiring": int(db["expires"]),
        "redis_aof_mb": round(int(persistence.get("aof_current_size", 0)) / 2**20, 1),
        "kafka_log_mb": round(tree_mb(settings.home / "kafka" / "data"), 1),
        "lag_transactions": lag[settings.topics.transactions],
        "lag_labels": lag[settings.topics.labels],
        "p50_ms": round(percentile(window.latencies_ms, 50), 2),
        "p99_ms": round(percentile(window.latencies_ms, 99), 2),
        "scored": window.scored,
        "dead_letters": window.dead,
        "sent_transactions": tally.transactions,
        "sent_labels": tally.labels,
        "load_1m": round(os.getloadavg()[0], 2),
    }


def progress(message: str) -> None:
    print(f"[bench soak] {message}", file=sys.stderr, flush=True)


def describe(s: dict[str, Any]) -> str:
    return (f"{s['minute']:5.1f} min: worker RSS {s['worker_rss_mb']:.0f} MB, Redis {s['redis_used_memory_mb']:.1f} MB "
            f"({s['redis_keys']:,} keys), lag tx {s['lag_transactions']:,} / labels {s['lag_labels']:,}, "
            f"p50 {s['p50_ms']:.0f} ms p99 {s['p99_ms']:.0f} ms, scored {s['scored']:,}, "
            f"dead {s['dead_letters']:,}, load {s['load_1m']:.2f}")


async def measure_capacity(settings: Settings, backend: str, options: SoakOptions, run: str, log_dir: Path) -> float:
    """``bench e2e``'s saturation phase, on topics and a key prefix of its own that are removed after."""
    phase = Phase(name=f"soak-{run}-sat", transactions=f"soak-{run}-sat-tx", scored=f"soak-{run}-sat-scored",
                  dead_letter=f"soak-{run}-sat-dlq", key_prefix=f"soak-{run}-sat")
    await ensure_topics(settings.kafka, {phase.transactions: settings.transactions_partitions,
                                         phase.scored: settings.transactions_partitions, phase.dead_letter: 1})
    try:
        result = await saturation(settings, phase, backend, count=options.saturation_count, mode="batched",
                                  batch=options.batch, seed=options.seed, log_dir=log_dir)
    finally:
        leftover_topic, table_dir = faust_leftovers(settings.model_copy(update={"app_id": bench_app_id(phase)}))
        await delete_topics(settings.kafka, [phase.transactions, phase.scored, phase.dead_letter, leftover_topic])
        purge_prefix(settings.redis, phase.key_prefix)
        shutil.rmtree(table_dir, ignore_errors=True)
    if not result["throughput_tps"]:
        msg = "the saturation phase measured no throughput: no share of it to offer (give --rate)"
        raise RuntimeError(msg)
    return float(result["throughput_tps"])


async def run_soak(settings: Settings, options: SoakOptions) -> dict[str, Any]:
    """The soak on a running stack described by ``settings`` (the stack's default topics are the soak's)."""
    run = uuid.uuid4().hex[:6]
    log_dir = settings.home / "logs" / "bench"
    backend = model_backend_for(settings)
    reference = {"before": machine_reference(settings)}
    progress(f"machine now: {reference['before']}, load average {os.getloadavg()}")
    capacity: float | None = None
    if options.rate is None:
        progress(f"saturation: {options.saturation_count:,} transactions backlog")
        capacity = await measure_capacity(settings, backend, options, run, log_dir)
        offered = options.share * capacity
        progress(f"  → {capacity:,.0f} tx/s; offering {options.share:.0%}: {offered:,.0f} tx/s")
    else:
        offered = options.rate
    topics = settings.topics
    phase = Phase(name=f"soak-{run}", transactions=topics.transactions, scored=topics.scored,
                  dead_letter=topics.dead_letter, key_prefix=f"soak-{run}")
    group = bench_app_id(phase)
    env = {**bench_worker_env(settings, phase, backend, "batched", options.batch),
           "FRAUD_DEDUP_HORIZON_S": str(options.dedup_horizon_s)}
    seconds = options.minutes * 60
    # Enough simulated transactions for the whole run; the stream is drawn lazily and cut at the deadline.
    population = SimulationConfig(count=int(offered * seconds * 1.1) + 10_000, seed=options.seed,
                                  id_prefix=f"soak-{run}", invalid_share=options.invalid_share)
    consumer = settings.kafka.consumer(enable_auto_commit=False)
    admin = settings.kafka.admin()
    await consumer.start()
    await admin.start()
    worker = spawn_worker(env, log_dir / f"{phase.name}.log")
    tally = Tally()
    samples: list[dict[str, Any]] = []
    stop_reading = asyncio.Event()
    try:
        wait_ready([worker])
        await group_stable(settings.kafka, group, 1, 120)
        await assign_at_end(consumer, settings.kafka, [topics.scored, topics.dead_letter])
        gc.collect()
        gc.freeze()  # what was built so far (TensorFlow's objects, if it exported the model) is never scanned
        reader = asyncio.create_task(read_results(settings, consumer, tally, stop_reading))
        started = time.monotonic()
        sender = asyncio.create_task(produce(settings.kafka, soak_records(settings, population, started + seconds),
                                             rate=offered, quiet=True, on_sent=tally.on_sent))
        progress(f"offering {offered:,.0f} tx/s (and their labels) for {options.minutes:g} min; a sample every "
                 f"{options.interval_s:g} s")
        ticks = max(1, math.ceil(seconds / options.interval_s))
        for tick in range(1, ticks + 1):
            await asyncio.sleep(max(0.0, started + min(tick * options.interval_s, seconds) - time.monotonic()))
            if not worker.alive():
                raise RuntimeError("the worker exited:\n" + worker.tail())
            if sender.done() and sender.exception() is not None:
                raise RuntimeError("the load generator failed") from sender.exception()
            samples.append(await sample(settings, worker, tally, admin, consumer, group, started))
            progress(describe(samples[-1]))
        await sender
        stopped = time.monotonic()
        while (tally.sent_at or tally.dead < tally.invalid) and time.monotonic() < stopped + options.drain_s:
            await asyncio.sleep(0.5)
        drained_s = time.monotonic() - stopped
        stop_reading.set()
        await reader
        final = await group_lag(settings, admin, consumer, group)
    finally:
        stop_reading.set()
        gc.unfreeze()
        worker.stop()
        await consumer.stop()
        await admin.close()
    reference["after"] = machine_reference(settings)
    progress(f"machine now: {reference['after']}, load average {os.getloadavg()}")
    judged = verdicts(samples, offered)
    unscored = len(tally.sent_at)
    return {
        "minutes": options.minutes, "interval_s": options.interval_s,
        "saturation_tps": None if capacity is None else round(capacity, 1),
        "offered_tps": round(offered, 1), "share": options.share if capacity is not None else None,
        "dedup_horizon_s": options.dedup_horizon_s,
        "sent": {"transactions": tally.transactions, "labels": tally.labels, "invalid": tally.invalid},
        "scored": tally.scored, "dead_letters": tally.dead,
        # neither scored nor dead-lettered within drain_s after the load stopped: lost, or a worker that
        # could not catch up with its backlog in that time (the samples' lag says which)
        "unscored": unscored + max(0, tally.invalid - tally.dead),
        "drain_s": round(drained_s, 1), "lag_after_drain": final,
        "samples": samples, "verdicts": judged,
        "ok": all(v["ok"] is not False for v in judged.values()) and unscored == 0 and tally.dead >= tally.invalid,
        "machine_reference": reference, "cpus": os.cpu_count(),
    }


def soak_stack(home: Path, settings: Settings) -> LocalStack:
    return LocalStack(home, transactions_partitions=settings.transactions_partitions)


def run(options: SoakOptions, home: Path) -> dict[str, Any]:
    """Start the soak's own stack in ``home``, run the soak, stop the stack (and drop its data unless kept)."""
    base = load_settings(home=home)
    stack = soak_stack(home, base)
    progress(f"starting a stack of its own in {stack.home}")
    state = stack.up()
    try:
        # explicit: FRAUD_* variables of the caller's environment must not point the soak at another stack
        settings = load_settings(home=stack.home, kafka_bootstrap=state.bootstrap, redis_url=state.redis_url,
                                 kafka_security_protocol="PLAINTEXT", redis_cluster=False)
        return asyncio.run(run_soak(settings, options))
    finally:
        stack.down()
        if not options.keep_data:
            for data in (stack.home / "kafka" / "data", stack.home / "redis"):
                shutil.rmtree(data, ignore_errors=True)


def table(result: dict[str, Any]) -> str:
    columns = [("minute", "min", "{:.1f}"), ("worker_rss_mb", "RSS MB", "{:.0f}"),
               ("redis_used_memory_mb", "Redis MB", "{:.1f}"), ("redis_keys", "keys", "{:,}"),
               ("lag_transactions", "lag tx", "{:,}"), ("lag_labels", "lag labels", "{:,}"),
               ("p50_ms", "p50 ms", "{:.0f}"), ("p99_ms", "p99 ms", "{:.0f}"), ("scored", "scored", "{:,}"),
               ("dead_letters", "dead", "{:,}"), ("load_1m", "load", "{:.2f}")]
    rows = [[label for _, label, _ in columns]]
    rows += [[fmt.format(s[key]) for key, _, fmt in columns] for s in result["samples"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.append("")
    for name, v in result["verdicts"].items():
        state = {True: "ok", False: "GROWS", None: "too short"}[v["ok"]]
        slope = "n/a" if v["slope_per_min"] is None else f"{v['slope_per_min']:+,.3f}"
        lines.append(f"{name:22s} slope {slope} {v['unit']} (bound {v['bound_per_min']:,} from minute "
                     f"{v['from_minute']}): {state}")
    lines.append(f"offered {result['offered_tps']:,} tx/s; sent {result['sent']}; scored {result['scored']:,}; "
                 f"dead letters {result['dead_letters']:,}; unscored {result['unscored']:,} "
                 f"(drained for {result['drain_s']:g} s); verdict "
                 f"{'ok' if result['ok'] else 'FAILED'}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> None:
    """Four panels against minutes: worker RSS, Redis used_memory, consumer lag, latency (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    minutes = [s["minute"] for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    panels = [
        (axes[0][0], [("worker_rss_mb", "worker RSS")], "MB"),
        (axes[0][1], [("redis_used_memory_mb", "Redis used_memory")], "MB"),
        (axes[1][0], [("lag_transactions", "transactions"), ("lag_labels", "labels")], "consumer lag (records)"),
        (axes[1][1], [("p50_ms", "p50"), ("p99_ms", "p99")], "ms, send → scored"),
    ]
    for ax, series, ylabel in panels:
        for key, label in series:
            ax.plot(minutes, [s[key] for s in samples], "o-", markersize=3, label=label)
        ax.set(ylabel=ylabel)
        ax.set_ylim(bottom=0)
        ax.legend(loc="lower right")
    for ax in axes[1]:
        ax.set(xlabel="minute")
    fig.suptitle(f"soak: {result['offered_tps']:,.0f} tx/s offered for {result['minutes']:g} min")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
