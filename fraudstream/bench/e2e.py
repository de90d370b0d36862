"""``fraudstream bench e2e``: the whole pipeline (Kafka → worker → Redis → model → Kafka), measured against
two per-record designs in the same run.

* saturation: once the worker is ready and its consumer group stable, a backlog of N transactions is
  produced at once; throughput is the rate at which scored records are produced (their Kafka timestamps)
  after that;
* echo: the same saturation with the worker as a pass-through (``pipeline_mode=echo``: decode, validate,
  publish; no Redis, no model; ``fraudstream/bench/echo.py``) — the ceiling of its I/O path,
  ``throughput_vs_echo``;
* Kafka round trip: no worker at all, records produced at 50 % of the batched saturation throughput and
  read back from the same topic (``kafka_rtt_p50_ms`` / ``kafka_rtt_p99_ms``);
* latency: after a warm-up at the same rate (``WARM_S`` seconds, not measured: a freshly started worker is
  slow for its first seconds), transactions are offered at 10 %, 25 % and 50 % of the batched saturation
  throughput of this run (``ratios.SHARES``), then at the fixed ``--rate``; latency is the time from each
  transaction's send to the arrival of its scored record at this process. The headline ``p50_ms`` /
  ``p99_ms`` are those at 50 % (``fraudstream/bench/ratios.py``);
* naive: the same worker as a conventional faust agent (``pipeline_mode=naive``: one Redis trip and one
  model call per record, each record's send buffered by the producer), saturation again —
  ``speedup_vs_naive`` is against this one;
* strict per record: the same, but each record's send awaited until the broker's ``acks=all``
  acknowledgement before the next record (``pipeline_mode=strict_per_record``), saturation again — stricter
  than a naive agent, reported beside it (``speedup_vs_strict_per_record``);
* scale-out (optional): the batched and the naive saturation phases again with two workers in one group.

The baselines are ``fraudstream/bench/baselines.py``.

Each phase has its own topics, consumer group and Redis key prefix, so runs never see each other's state.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from config.kafka import KafkaConnection, as_connection, assign_at_end, delete_topics, ensure_topics
from config.settings import Settings, Topics
from features.simulator import SimulationConfig, Simulator
from fraudstream.bench.components import (
    component_costs,
    cpu_seconds,
    per_tx,
    purge_cluster_prefix,
    stack_processes,
)
from fraudstream.bench.ratios import HEADLINE_SHARE, SHARES, ratio_figures, share_key, targets
from fraudstream.bench.stages import describe as describe_stages
from fraudstream.bench.stages import stage_breakdown
from fraudstream.demo import has_model
from fraudstream.stack.redis import purge_prefix, scratch_redis
from fraudstream.workers import WorkerProcess, spawn_worker, worker_env
from schemas import Transaction, transaction_context
from schemas.codec import decode
from streams.app import faust_leftovers
from streams.partitioner import partitions_for


@dataclass(frozen=True)
class Phase:
    name: str
    transactions: str
    scored: str
    dead_letter: str
    key_prefix: str


def payloads(count: int, seed: int, prefix: str) -> list[tuple[bytes, bytes]]:
    """Pre-generated (key, value) pairs, so producing is not what is measured."""
    simulator = Simulator(SimulationConfig(count=count, seed=seed, id_prefix=prefix))
    return [(str(tx.payload["card_id"]).encode(), orjson.dumps(tx.payload)) for tx in simulator.transactions()]


def warm_and_measured(warm: int, measured: int, seed: int, prefix: str
                      ) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """A warm-up and the measured transactions after it, cut from one simulated stream: the measured ones
    follow the warm-up in event time, as live traffic does. Two streams that each end "now" (as before)
    made 91% of the measured transactions older than their card's state after the warm-up: late events,
    a different load, until the stream caught up in the run's last tenth."""
    stream = payloads(warm + measured, seed, prefix)
    return stream[:warm], stream[warm:]


def phase_topics(phase: Phase) -> Topics:
    return Topics(transactions=phase.transactions, scored=phase.scored, dead_letter=phase.dead_letter)


async def send_all(kafka: KafkaConnection | str, topic: str, items: list[tuple[bytes, bytes]], rate: float | None = None
                   ) -> dict[bytes, float]:
    """Send items (optionally paced at ``rate``/s); returns each value's transaction id → send time.

    Records are handed to the producer as one batch per partition of whatever is due (keys partitioned
    as Kafka's default partitioner does, so each card keeps its order). The load generator shares this
    machine's two cores with what it measures: one ``send`` per record cost the bench ~50 µs of CPU per
    transaction at 5,000 tx/s offered, and the broker more per record for the small requests.
    """
    producer = as_connection(kafka).producer(acks=1, linger_ms=2, max_batch_size=512 * 1024)
    await producer.start()
    sent_at: dict[bytes, float] = {}
    try:
        partitions = sorted(await producer.partitions_for(topic))
        targets = partitions_for([key for key, _ in items], partitions)
        start = time.perf_counter()
        futures: list[asyncio.Future[Any]] = []
        done = 0
        while done < len(items):
            if rate:
                wait = start + done / rate - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(max(wait, SEND_TICK_S))
                due = min(len(items), max(done + 1, int((time.perf_counter() - start) * rate) + 1))
            else:
                due = min(len(items), done + 5000)
            futures += await _send_batches(producer, topic, items, targets, done, due)
            now = time.time()
            for _, value in items[done:due]:
                sent_at[_tx_id(value)] = now
            done = due
            if len(futures) >= 2000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent_at


SEND_TICK_S = 0.002
"""Shortest sleep of the paced sender: every wake-up sends all records due by then (~10 at 5,000 tx/s)."""


async def _send_batches(producer: AIOKafkaProducer, topic: str, items: list[tuple[bytes, bytes]],
                        targets: list[int], lo: int, hi: int) -> list[asyncio.Future[Any]]:
    builders: dict[int, Any] = {}
    futures: list[asyncio.Future[Any]] = []
    for (key, value), partition in zip(items[lo:hi], targets[lo:hi], strict=True):
        builder = builders.get(partition)
        if builder is None:
            builder = builders[partition] = producer.create_batch()
        if builder.append(timestamp=None, key=key, value=value) is None:  # full: send it, start another
            futures.append(await producer.send_batch(builder, topic, partition=partition))
            builder = builders[partition] = producer.create_batch()
            builder.append(timestamp=None, key=key, value=value)
    for partition, builder in builders.items():
        futures.append(await producer.send_batch(builder, topic, partition=partition))
    return futures


WARM_S = 3.0
"""Seconds of offered load before a latency measurement. Measured: right after start-up a worker scored
the first ~2 s of a 1,000 tx/s load 0.5-2 s late (p99 ~1.8 s), then 25 ms at p50 and < 60 ms at max."""


def _tx_id(value: bytes) -> bytes:
    start = value.index(b'"transaction_id":"') + 18
    return value[start : value.index(b'"', start)]


class CpuMeter:
    """CPU used by the worker(s), each Redis node, each Kafka broker and this process between two marks, per
    transaction scored in between: unlike a wall-clock rate this says where the machine's two cores go, and
    other load barely moves it (the processes: ``fraudstream/bench/components.py``)."""

    def __init__(self, settings: Settings, worker_pids: list[int]) -> None:
        self.processes = stack_processes(settings.home, list(worker_pids))
        self.marks: list[tuple[int, float, dict[int, float]]] = []

    def mark(self, done: int) -> None:
        self.marks.append((done, time.monotonic(), {m.pid: cpu_seconds(m.pid) for m in self.processes}))

    def per_tx(self) -> dict[str, Any]:
        if len(self.marks) < 2 or self.marks[-1][0] <= self.marks[0][0]:
            return {}
        (n0, t0, u0), (n1, t1, u1) = self.marks[0], self.marks[-1]
        out = per_tx(self.processes, u0, u1, n1 - n0)
        out["cores_busy"] = round(sum(u1[p] - u0[p] for p in u1) / (t1 - t0), 2)
        return out


async def collect(
    consumer: AIOKafkaConsumer, expected: int, timeout_s: float, workers: Sequence[WorkerProcess],
    meter: CpuMeter | None = None, values: dict[bytes, bytes] | None = None,
) -> tuple[list[float], dict[bytes, float], int]:
    """Read scored records until ``expected`` arrived; returns their Kafka timestamps (s), arrival time per
    transaction id, and the number of dead letters seen. The meter is marked at 10% and 90% of the records.
    Raises when every worker has exited: waiting out the timeout would only hide the worker's error (no
    workers: the records are the producer's own, read back by ``kafka_rtt``). ``values``: filled with each
    scored record's value by transaction id (for ``stages.stage_breakdown``)."""
    stamps: list[float] = []
    arrivals: dict[bytes, float] = {}
    dead = 0
    marks = [expected // 10, expected * 9 // 10]
    deadline = time.monotonic() + timeout_s
    next_check = 0.0
    while len(arrivals) + dead < expected and time.monotonic() < deadline:
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + 1.0
            if workers and not any(w.alive() for w in workers):
                raise RuntimeError("the worker exited:\n" + workers[0].tail())
        if meter is not None and marks and len(arrivals) + dead >= marks[0]:
            meter.mark(len(arrivals) + dead)
            while marks and len(arrivals) + dead >= marks[0]:  # one fetch may pass both marks
                marks.pop(0)
        batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
        now = time.time()
        for tp, messages in batches.items():
            for m in messages:
                if tp.topic.endswith("-dlq"):
                    dead += 1
                    continue
                stamps.append(m.timestamp / 1000.0)
                tx_id = _tx_id(m.value or b'"transaction_id":""')
                arrivals[tx_id] = now
                if values is not None:
                    values[tx_id] = m.value or b"{}"
    if meter is not None and len(meter.marks) == 1:  # the records after the first mark came in one go
        meter.mark(len(arrivals) + dead)
    return stamps, arrivals, dead


def bench_app_id(phase: Phase) -> str:
    """The consumer group of a phase's worker(s); unique per run, as phase names carry the run's id."""
    return f"bench-{phase.name}"


def bench_worker_env(settings: Settings, phase: Phase, model_backend: str, mode: str, batch: int) -> dict[str, str]:
    return worker_env(
        home=settings.home, bootstrap=settings.kafka_bootstrap, redis_url=settings.redis_url,
        model_backend=model_backend, topics=phase_topics(phase),
        FRAUD_APP_ID=bench_app_id(phase), FRAUD_PIPELINE_MODE=mode,
        FRAUD_FEATURE_KEY_PREFIX=phase.key_prefix, FRAUD_METRICS_PORT="0", FRAUD_BATCH_MAX_SIZE=str(batch),
    )


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def wait_ready(workers: Sequence[WorkerProcess], timeout_s: float = 180.0) -> None:
    for worker in workers:
        if not worker.wait_ready(timeout_s):
            raise RuntimeError("worker did not become ready:\n" + worker.tail())


async def group_stable(kafka: KafkaConnection | str, group: str, members: int, timeout_s: float) -> None:
    """Wait until the consumer group has ``members`` members and is ``Stable`` (partitions handed out)."""
    admin = as_connection(kafka).admin()
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            (response,) = await admin.describe_consumer_groups([group])
            described = response.to_object()["groups"][0]
            if described["state"] == "Stable" and len(described["members"]) == members:
                return
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    msg = f"consumer group {group} did not settle with {members} member(s) in {timeout_s:.0f} s"
    raise RuntimeError(msg)


async def saturation(settings: Settings, phase: Phase, model_backend: str, *, count: int, mode: str, batch: int,
                     seed: int, log_dir: Path, workers: int = 1) -> dict[str, Any]:
    """The workers start, join their group and get their partitions; then the backlog is produced at once
    (several times faster than any worker consumes it), and throughput is measured from the scored records
    stamped after that: neither start-up, nor the group's join and rebalances, nor this process producing
    is in it. (With two workers started on a waiting backlog, the first took every partition and the
    second's join then paused both in the middle of the measurement.)"""
    items = payloads(count, seed, phase.name)
    consumer = settings.kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    env = bench_worker_env(settings, phase, model_backend, mode, batch)  # one app id: the workers share the group
    processes = [spawn_worker(env, log_dir / f"{phase.name}-{i}.log") for i in range(workers)]
    try:
        wait_ready(processes)
        await group_stable(settings.kafka, bench_app_id(phase), workers, 120)
        meter = CpuMeter(settings, [p.pid for p in processes])
        await assign_at_end(consumer, settings.kafka, [phase.scored, phase.dead_letter])
        await send_all(settings.kafka, phase.transactions, items)
        produced = time.time()  # the broker's timestamps are this machine's clock
        stamps, arrivals, dead = await collect(consumer, count, 120 + count / 200, processes, meter)
    finally:
        await consumer.stop()
        for process in processes:
            process.stop()
    steady = sorted(t for t in stamps if t >= produced)
    # Skip the first and last 5%: the workers' first batches (model and Redis functions warming) and the
    # tail (the last partitions to finish) are not "sustained".
    lo, hi = int(len(steady) * 0.05), int(len(steady) * 0.95)
    span = steady[hi - 1] - steady[lo] if hi - 1 > lo else float("nan")
    return {"transactions": count, "scored": len(stamps), "dead_lettered": dead, "workers": workers,
            "lost": max(0, count - len(arrivals) - dead),
            "throughput_tps": (hi - 1 - lo) / span if span and span > 0 else 0.0, "cpu": meter.per_tx()}


@contextmanager
def no_collector_pauses() -> Iterator[None]:
    """Python's cyclic garbage collector off while this process times records: a full collection of its
    heap paused it for 240-300 ms (measured with gc callbacks), stamping every record that arrived
    meanwhile that much late and holding back the paced sender. Reference counting still frees memory."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def fixed_load(settings: Settings, phase: Phase, model_backend: str, *, rate: float, seconds: float,
                     batch: int, seed: int, log_dir: Path) -> dict[str, Any]:
    count = int(rate * seconds)
    warm, items = warm_and_measured(max(2000, int(rate * WARM_S)), count, seed, phase.name)
    consumer = settings.kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    worker = spawn_worker(bench_worker_env(settings, phase, model_backend, "batched", batch),
                          log_dir / f"{phase.name}.log")
    try:
        wait_ready([worker])
        await assign_at_end(consumer, settings.kafka, [phase.scored, phase.dead_letter])
        await send_all(settings.kafka, phase.transactions, warm, rate=rate)  # group join + warm-up
        await collect(consumer, len(warm), 120 + WARM_S, [worker])
        # Under a paced load the bench's CPU includes its producer, unlike the saturation phases.
        meter = CpuMeter(settings, [worker.pid])
        scored: dict[bytes, bytes] = {}
        with no_collector_pauses():
            sender = asyncio.create_task(send_all(settings.kafka, phase.transactions, items, rate=rate))
            _, arrivals, dead = await collect(consumer, count, seconds + 120, [worker], meter, scored)
            sent_at = await sender
    finally:
        await consumer.stop()
        worker.stop()
    latencies = [(arrivals[k] - sent_at[k]) * 1000 for k in arrivals if k in sent_at]
    span = (max(arrivals.values()) - min(sent_at.values())) if arrivals and sent_at else float("nan")
    return {"offered_tps": rate, "delivered_tps": len(arrivals) / span if span and span > 0 else 0.0,
            "transactions": count, "scored": len(arrivals), "dead_lettered": dead,
            "lost": max(0, count - len(latencies) - dead),  # one latency per scored transaction of the run
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "p999_ms": percentile(latencies, 99.9), "max_ms": max(latencies) if latencies else float("nan"),
            "cpu": meter.per_tx(), "stages": stage_breakdown(scored, sent_at, arrivals)}


async def kafka_rtt(settings: Settings, phase: Phase, *, rate: float, seconds: float, seed: int) -> dict[str, Any]:
    """The broker's own round trip, no worker: records produced to a topic at ``rate`` by the same paced
    sender as the latency phases and read back by the same consumer; the time from each send to its arrival
    here. The floor under the pipeline's latency, which has two such hops (in and out) plus the worker."""
    count = int(rate * seconds)
    warm, items = warm_and_measured(max(500, int(rate)), count, seed, phase.name)
    consumer = settings.kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    try:
        await assign_at_end(consumer, settings.kafka, [phase.transactions])
        await send_all(settings.kafka, phase.transactions, warm, rate=rate)  # connections and metadata warm
        await collect(consumer, len(warm), 60, [])
        with no_collector_pauses():
            sender = asyncio.create_task(send_all(settings.kafka, phase.transactions, items, rate=rate))
            _, arrivals, _ = await collect(consumer, count, seconds + 60, [])
            sent_at = await sender
    finally:
        await consumer.stop()
    rtt = [(arrivals[k] - sent_at[k]) * 1000 for k in arrivals if k in sent_at]
    return {"offered_tps": rate, "transactions": count, "received": len(rtt), "lost": count - len(rtt),
            "p50_ms": percentile(rtt, 50), "p99_ms": percentile(rtt, 99), "p999_ms": percentile(rtt, 99.9)}


def cpu_split(phase: dict[str, Any]) -> str:
    cpu = phase.get("cpu") or {}
    parts = [f"{name.removesuffix('_cpu_us_per_tx')} {value:.0f}"
             for name, value in cpu.items() if name.endswith("_per_tx")]
    nodes = cpu.get("redis_nodes") or []
    if len(nodes) > 1:  # a cluster: each node's share
        parts.append("per Redis node " + "/".join(f"{n['cpu_us_per_tx']:.0f}" for n in nodes))
    return f"CPU µs per transaction: {', '.join(parts)}; {cpu.get('cores_busy', 0):.2f} cores busy" if parts else ""


def progress(message: str) -> None:
    print(f"[bench e2e] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BenchOptions:
    saturation_count: int = 60_000
    naive_count: int = 3_000
    """The backlog of each per-record baseline (naive, strict per record)."""
    fixed_rate: float = 5_000.0
    fixed_seconds: float = 10.0
    sweep: tuple[float, ...] = ()
    batch: int = 512
    scale_out: bool = False
    seed: int = 11


def model_backend_for(settings: Settings) -> str:
    if has_model(settings):
        return settings.effective_model_backend
    repo = settings.home / "bench-models"
    if not (repo / settings.model_name / "1").is_dir():
        # imported only to export: TensorFlow's ~400k objects in this process made its collections slow
        from features import FEATURE_LIST
        from scoring.testing.model_factory import export_model

        progress("no trained model: exporting a small real DNN over the full feature list for the benchmark")
        export_model(repo, model_name=settings.model_name, feature_names=FEATURE_LIST.names,
                     feature_hash=FEATURE_LIST.hash, hidden=64)
    return f"local://{(repo / settings.model_name).resolve()}"


REFERENCE_FUNCTION = "#!lua name=fsreference\nredis.register_function('fsreference_one', function(k, a) return 1 end)"


def machine_reference(settings: Settings, seconds: float = 1.5) -> dict[str, float]:
    """How fast this machine is right now, from work that is the same in every run: Redis CPU per trivial
    function call (pipelined, as the worker's are) and this process's CPU per transaction validated (the
    worker's first step). Measured at the start and the end of a run, it tells a slower machine from slower
    code when absolute figures of two runs differ: this VM's speed drifts by 10-40%."""
    client = settings.redis.sync_client()
    try:
        client.function_load(REFERENCE_FUNCTION, replace=True)
        cpu0, calls, start = _redis_cpu(client), 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            pipe = client.pipeline(transaction=False)
            for i in range(2000):
                pipe.fcall("fsreference_one", 1, f"fsreference:{{{i}}}")
            pipe.execute()
            calls += 2000
        redis_us = (_redis_cpu(client) - cpu0) / calls * 1e6
        client.function_delete("fsreference")
    finally:
        client.close()
    values = [value for _, value in payloads(5000, 1, "reference")]
    context = transaction_context(datetime.now(UTC), settings.max_clock_skew_s)
    for value in values[:500]:  # warm: the first validations of a process cost more
        decode(Transaction, value, max_bytes=settings.max_message_bytes, context=context)
    cpu = time.process_time()
    for value in values:
        decode(Transaction, value, max_bytes=settings.max_message_bytes, context=context)
    decode_us = (time.process_time() - cpu) / len(values) * 1e6
    return {"redis_trivial_call_cpu_us": round(redis_us, 2), "validate_cpu_us_per_tx": round(decode_us, 2)}


def machine_now(settings: Settings) -> dict[str, float]:
    """The machine reference, on one non-cluster ``redis-server`` whatever the stack runs: on a cluster
    stack a scratch server of the same binary (the trivial call is a read, so its AOF does not matter),
    so the reference is the same work in a single-node and a cluster run and their ratios compare."""
    if not settings.redis_cluster:
        return machine_reference(settings)
    with scratch_redis(settings.home.resolve() / "bench-reference-redis") as url:  # redis-server chdirs to it
        return machine_reference(settings.model_copy(update={"redis_url": url, "redis_cluster": False}))


def purge_phase_keys(settings: Settings, prefix: str) -> None:
    if settings.redis_cluster:
        purge_cluster_prefix(settings.home, prefix)
    else:
        purge_prefix(settings.redis, prefix)


def per_component(saturated: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """CPU µs per transaction of the worker, each Redis node, each broker, at saturation (``cpu_us_per_tx``)
    and at the fixed ``--rate`` (the same offered load in every run, whatever its saturation throughput)."""
    return {"cpu_us_per_tx": component_costs(saturated.get("cpu") or {}),
            "cpu_us_per_tx_at_fixed_rate": component_costs(fixed.get("cpu") or {})}


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def run_bench(settings: Settings, options: BenchOptions) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    phases = {name: Phase(name=f"{name}-{run}", transactions=f"bench-{run}-{name}-tx",
                          scored=f"bench-{run}-{name}-scored", dead_letter=f"bench-{run}-{name}-dlq",
                          key_prefix=f"bench-{run}-{name}")
              for name in ("batched", "echo", "rtt", *(share_key(s) for s in SHARES), "latency", "naive", "strict",
                           "two", "naive-two", *(f"load{int(r)}" for r in options.sweep))}
    backend = model_backend_for(settings)
    log_dir = settings.home / "logs" / "bench"
    partitions = settings.transactions_partitions
    reference = {"before": machine_now(settings)}
    progress(f"machine now: {reference['before']}")
    await ensure_topics(settings.kafka, {
        name: (1 if name == p.dead_letter else partitions)
        for p in phases.values() for name in (p.transactions, p.scored, p.dead_letter)
    })
    try:
        progress(f"saturation, batched pipeline: {options.saturation_count:,} transactions backlog")
        batched = await saturation(settings, phases["batched"], backend, count=options.saturation_count,
                                   mode="batched", batch=options.batch, seed=options.seed, log_dir=log_dir)
        progress(f"  → {batched['throughput_tps']:,.0f} tx/s; {cpu_split(batched)}")
        capacity = batched["throughput_tps"]
        if not capacity:
            msg = "the batched saturation phase measured no throughput: no share of it to offer"
            raise RuntimeError(msg)
        progress(f"saturation, echo (the same worker as a pass-through): {options.saturation_count:,} transactions")
        echo = await saturation(settings, phases["echo"], backend, count=options.saturation_count, mode="echo",
                                batch=options.batch, seed=options.seed, log_dir=log_dir)
        progress(f"  → {echo['throughput_tps']:,.0f} tx/s; {cpu_split(echo)}")
        half = HEADLINE_SHARE * capacity
        progress(f"Kafka round trip, no worker, at {half:,.0f} tx/s offered for {options.fixed_seconds:.0f} s")
        rtt = await kafka_rtt(settings, phases["rtt"], rate=half, seconds=options.fixed_seconds, seed=options.seed + 5)
        progress(f"  → p50 {rtt['p50_ms']:.1f} ms, p99 {rtt['p99_ms']:.1f} ms")
        shares: dict[float, dict[str, Any]] = {}
        for share in SHARES:
            rate = share * capacity
            progress(f"latency at {share:.0%} of capacity: {rate:,.0f} tx/s offered for {options.fixed_seconds:.0f} s")
            point = shares[share] = await fixed_load(
                settings, phases[share_key(share)], backend, rate=rate, seconds=options.fixed_seconds,
                batch=options.batch, seed=options.seed + 1, log_dir=log_dir)
            progress(f"  → p50 {point['p50_ms']:.1f} ms, p99 {point['p99_ms']:.1f} ms, "
                     f"p99.9 {point['p999_ms']:.1f} ms; {cpu_split(point)}")
            progress(f"    stages p50/p99 ms: {describe_stages(point['stages'])}")
        progress(f"latency at {options.fixed_rate:,.0f} tx/s offered for {options.fixed_seconds:.0f} s")
        latency = await fixed_load(settings, phases["latency"], backend, rate=options.fixed_rate,
                                   seconds=options.fixed_seconds, batch=options.batch, seed=options.seed + 1,
                                   log_dir=log_dir)
        progress(f"  → p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms; {cpu_split(latency)}")
        progress(f"saturation, naive agent (buffered sends): {options.naive_count:,} transactions backlog")
        naive = await saturation(settings, phases["naive"], backend, count=options.naive_count, mode="naive",
                                 batch=options.batch, seed=options.seed + 2, log_dir=log_dir)
        progress(f"  → {naive['throughput_tps']:,.0f} tx/s; {cpu_split(naive)}")
        progress(f"saturation, strict per record (each send acknowledged): {options.naive_count:,} transactions")
        strict = await saturation(settings, phases["strict"], backend, count=options.naive_count,
                                  mode="strict_per_record", batch=options.batch, seed=options.seed + 2,
                                  log_dir=log_dir)
        progress(f"  → {strict['throughput_tps']:,.0f} tx/s; {cpu_split(strict)}")
        two: dict[str, Any] | None = None
        naive_two: dict[str, Any] | None = None
        if options.scale_out:
            progress(f"saturation, two workers in one consumer group: {options.saturation_count:,} transactions")
            two = await saturation(settings, phases["two"], backend, count=options.saturation_count, mode="batched",
                                   batch=options.batch, seed=options.seed + 3, log_dir=log_dir, workers=2)
            progress(f"  → {two['throughput_tps']:,.0f} tx/s; {cpu_split(two)}")
            # The batched pipeline keeps this machine's cores busy with one worker; the naive one waits on
            # round trips, so it shows what a second worker in the group adds where cores are free.
            progress(f"saturation, naive agent, two workers: {options.naive_count:,} transactions backlog")
            naive_two = await saturation(settings, phases["naive-two"], backend, count=options.naive_count,
                                         mode="naive", batch=options.batch, seed=options.seed + 2, log_dir=log_dir,
                                         workers=2)
            progress(f"  → {naive_two['throughput_tps']:,.0f} tx/s (one worker: {naive['throughput_tps']:,.0f})")
        sweep = []
        for rate in options.sweep:
            progress(f"sweep: {rate:,.0f} tx/s offered")
            sweep.append(await fixed_load(settings, phases[f"load{int(rate)}"], backend, rate=rate,
                                          seconds=options.fixed_seconds, batch=options.batch,
                                          seed=options.seed + int(rate), log_dir=log_dir))
            point = sweep[-1]
            progress(f"  → delivered {point['delivered_tps']:,.0f} tx/s, p50 {point['p50_ms']:.1f} ms, "
                     f"p99 {point['p99_ms']:.1f} ms; {cpu_split(point)}")
    finally:
        # faust's leader topic and table directory of each phase's app id (700+ topics had piled up)
        leftovers = [faust_leftovers(settings.model_copy(update={"app_id": bench_app_id(p)})) for p in phases.values()]
        await delete_topics(settings.kafka,
                            [t for p in phases.values() for t in (p.transactions, p.scored, p.dead_letter)]
                            + [topic for topic, _ in leftovers])
        for phase in phases.values():
            purge_phase_keys(settings, phase.key_prefix)
        for _, table_dir in leftovers:
            shutil.rmtree(table_dir, ignore_errors=True)
    reference["after"] = machine_now(settings)
    progress(f"machine now: {reference['after']}")
    measured = {"batched": batched, "echo": echo, "kafka_rtt": rtt, "latency": latency, "naive": naive,
                "strict_per_record": strict, **{share_key(share): point for share, point in shares.items()},
                "two_workers": two, "naive_two_workers": naive_two,
                **{f"sweep {point['offered_tps']:,.0f} tx/s": point for point in sweep}}
    lost = {name: phase["lost"] for name, phase in measured.items() if phase is not None and phase["lost"]}
    if lost:
        progress(f"LOST transactions (neither scored nor dead-lettered before the timeout): {lost}")
    result = {
        # p50_ms / p99_ms: at HEADLINE_SHARE of this run's saturation throughput (the fixed rate's are below)
        **headline(batched, shares[HEADLINE_SHARE], naive, strict),
        **ratio_figures(batched, echo, rtt, shares, reference),
        "fixed_rate": {"offered_tps": options.fixed_rate, "p50_ms": round(latency["p50_ms"], 2),
                       "p99_ms": round(latency["p99_ms"], 2), "p999_ms": round(latency["p999_ms"], 2)},
        "offered_tps": round(HEADLINE_SHARE * capacity, 1),
        "batch_max_size": options.batch,
        "lost": sum(lost.values()),
        "phases": {"batched": batched, "echo": echo, "kafka_rtt": rtt,
                   **{share_key(share): point for share, point in shares.items()}, "latency": latency,
                   "naive": naive, "strict_per_record": strict, "two_workers": two, "naive_two_workers": naive_two},
        "sweep": sweep,
        **per_component(batched, latency),
        "model_backend": backend,
        "machine_reference": reference,
    }
    result["targets"] = targets(result)
    return result


def headline(batched: dict[str, Any], latency: dict[str, Any], naive: dict[str, Any], strict: dict[str, Any]
             ) -> dict[str, float]:
    """The contract figures of a run: ``speedup_vs_naive`` against the conventional naive agent, the
    strict per-record design's figure beside it; ``p50_ms`` / ``p99_ms`` of the ``latency`` phase given
    (``run_bench`` gives the one at 50 % of the saturation throughput)."""

    def ratio(baseline: dict[str, Any]) -> float:
        tps = float(baseline["throughput_tps"])
        return round(batched["throughput_tps"] / tps, 2) if tps else float("nan")

    return {
        "throughput_tps": round(batched["throughput_tps"], 1),
        "p50_ms": round(latency["p50_ms"], 2),
        "p99_ms": round(latency["p99_ms"], 2),
        "speedup_vs_naive": ratio(naive),
        "naive_throughput_tps": round(naive["throughput_tps"], 1),
        "speedup_vs_strict_per_record": ratio(strict),
        "strict_per_record_throughput_tps": round(strict["throughput_tps"], 1),
    }


def plot_sweep(result: dict[str, Any], path: str) -> None:
    """Delivered throughput and p50/p99 latency against offered load (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(result["sweep"], key=lambda r: r["offered_tps"])
    offered = [r["offered_tps"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(offered, [r["delivered_tps"] for r in rows], "o-", label="delivered")
    left.plot(offered, offered, "--", color="grey", label="offered")
    left.axhline(result["throughput_tps"], color="tab:red", linestyle=":", label="saturation (backlog)")
    left.set(xlabel="offered load (tx/s)", ylabel="tx/s", title="throughput")
    left.legend()
    right.plot(offered, [r["p50_ms"] for r in rows], "o-", label="p50")
    right.plot(offered, [r["p99_ms"] for r in rows], "o-", label="p99")
    right.set(xlabel="offered load (tx/s)", ylabel="ms (send → scored record received)", title="latency",
              yscale="log")
    right.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_shares(result: dict[str, Any], path: str) -> None:
    """p50/p99/p99.9 (send → scored record received) against the offered share of the run's capacity (PNG),
    with the Kafka round trip without a worker at 50 % for the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["latency_at_share"]
    shares = [100 * r["share"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
        ax.plot(shares, [r[key] for r in rows], "o-", label=label)
    ax.axhline(result["kafka_rtt_p99_ms"], color="grey", linestyle=":", label="Kafka round trip p99 (no worker)")
    ax.set(xlabel=f"offered load, % of saturation ({result['throughput_tps']:,.0f} tx/s)",
           ylabel="ms (send → scored record received)", yscale="log",
           title="latency at a share of capacity")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
