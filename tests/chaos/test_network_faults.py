"""Network faults between the worker and Redis, through a real Toxiproxy, mid-stream.

The worker reaches Redis only through a Toxiproxy proxy (tests/chaos/proxied.py); a card history streams at
a steady rate while the test applies one fault after another and heals it: 200 ms latency with ±100 ms
jitter, ``reset_peer`` on Redis's replies (every connection reset in the middle of a pipelined batch that
Redis already executed), a black hole (Toxiproxy's ``timeout`` toxic in both directions: bytes dropped, no
FIN, no RST) and a 30 s partition (the proxy disabled: connections closed, new ones refused).

Promises (docs/reliability.md), checked for each:

- nothing is lost: every produced id is scored, none dead-lettered, the group commits to the end;
- nothing is counted twice: the feature state equals the offline engine's on the history applied once,
  although Redis executed some batches twice (INFO commandstats shows the extra calls);
- a slow link slows the stream, a dead one pauses it (nothing scored while it lasts), and it moves again by
  itself once the link is back;
- the worker says what happened: "… in Redis failed" / "… recovered after" in its log, and
  ``fraudstream_backend_errors_total{backend="redis"}`` on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from fraudstream.stack import StackState
from fraudstream.stack.process import free_port
from fraudstream.stack.toxiproxy import Toxic, ToxiproxyClient
from fraudstream.workers import WorkerProcess
from tests.chaos.proxied import (
    KafkaBehindProxy,
    Phase,
    Proxies,
    backend_errors,
    drain,
    fcall_calls,
    scored_at,
    scrape,
    start_kafka_behind_proxy,
    start_proxies,
    wait_recovered,
)
from tests.fixtures.history import History, max_rel_diff, offline_probe_vectors, online_probe_vectors
from tests.fixtures.models import serving
from tests.fixtures.topics import Collector, create_topics, produce, run_id, run_topics, wait_caught_up
from tests.fixtures.workers import launch, wait_ready, worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
RATE = 60.0  # transactions per second: every phase sees traffic
START_AFTER_SCORED = 200  # ids scored before the first fault
LATENCY_MS, JITTER_MS, LATENCY_S = 200, 100, 6.0
RESET_S = 2.0
BLACK_HOLE_S = 12.0  # longer than the Redis client's 5 s socket timeout (config/redis.py)
PARTITION_S = 30.0
FAULTS_CARDS, FAULTS_PER_CARD = 100, 30
MODEL_CARDS, MODEL_PER_CARD = 60, 40
MODEL_GRACE_S, MODEL_DEADLINE_S, MODEL_PARTITION_S = 3.0, 1.0, 12.0
PARTITION_CARDS, PARTITION_PER_CARD = 60, 40
BANDWIDTH_KB_S, BANDWIDTH_S = 4, 15.0  # both directions; the stream's records alone need ~30 KB/s at RATE
KAFKA_SESSION_S, KAFKA_BLACK_HOLE_S = 10.0, 100.0  # outlasts the session and the 40 s / 90 s request timeouts


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory, stack: StackState) -> Iterator[Proxies]:
    assert stack.redis.port is not None
    yield from start_proxies(tmp_path_factory.mktemp("toxiproxy"), stack.redis.port)


@contextlib.contextmanager
def black_hole(toxiproxy: ToxiproxyClient, proxy: str) -> Iterator[None]:
    """Both directions dropped, the connections left open: a dead link, or a firewall that lost their state."""
    with toxiproxy.toxic(proxy, Toxic.black_hole(stream="upstream")), \
            toxiproxy.toxic(proxy, Toxic.black_hole(stream="downstream")):
        yield


async def fault(collector: Collector, worker: WorkerProcess, name: str, toxic: AbstractContextManager[object],
                seconds: float, *, recover_s: float = 60.0, settle_s: float | None = None) -> Phase:
    """``toxic`` for ``seconds``, then healed; waits until the stream moves again. Keeps the worker's log of the
    fault (written before the heal: what the worker noticed by itself) and of fault and recovery. With
    ``settle_s`` (a link that passes nothing), ``notes`` has the scored count ``settle_s`` in — what was in
    flight has landed by then — and at the heal: equal when nothing crossed the link meanwhile."""
    before = len(worker.output())
    with toxic:
        started = time.time()
        if settle_s is not None:
            await asyncio.sleep(settle_s)
            arrived_early = collector.out.scored_total
            await asyncio.sleep(seconds - settle_s)
            phase_notes = {"scored_after_settle": arrived_early, "scored_at_heal": collector.out.scored_total}
        else:
            await asyncio.sleep(seconds)
            phase_notes = {}
        during = worker.output()[before:]
        healed = time.time()
    phase = Phase(name, started, healed, during=during, notes=phase_notes)
    await wait_recovered(collector, phase, timeout_s=recover_s)
    phase.log = worker.output()[before:]
    return phase


async def check_state(history: History, redis_url: str, key_prefix: str) -> None:
    probes = history.probes()
    online = await online_probe_vectors(redis_url, probes, key_prefix=key_prefix)
    diff, worst = max_rel_diff(online, offline_probe_vectors(history, probes))
    assert diff <= 1e-6, f"the feature state differs from the offline engine on {worst}: {diff}"


async def stream_with_faults(
    proxies: Proxies, direct_redis_url: str, kafka: str, backend: str, tmp_path: Path, name: str,
    history: History, faults: list[tuple[str, AbstractContextManager[object], float]],
) -> tuple[list[Phase], dict[str, float], int]:
    """Runs a worker through ``faults``; returns the phases, its last metrics and the FCALLs Redis executed
    beyond one per transaction and label."""
    run = history.run
    topics = run_topics(run)
    await create_topics(kafka, topics)
    port = free_port()
    prefix = f"fs-{run}"
    env = worker_env(tmp_path, kafka, proxies.redis_url, backend, topics, run, FRAUD_METRICS_PORT=str(port),
                     FRAUD_FEATURE_KEY_PREFIX=prefix)
    calls_before = fcall_calls(direct_redis_url)
    phases: list[Phase] = []
    async with Collector(kafka, topics) as collector:
        worker = launch(env, tmp_path / f"worker-{name}.log")
        try:
            await wait_ready(worker)
            producing = asyncio.create_task(produce(kafka, history.records(topics), rate=RATE))
            await collector.wait(lambda o: len(o.scored) >= START_AFTER_SCORED, 120, "scored before the faults",
                                 worker=worker)
            for fault_name, toxic, seconds in faults:
                phases.append(await fault(collector, worker, fault_name, toxic, seconds))
            await producing
            out, metrics = await drain(collector, history.ids, kafka, run, topics, worker, port)
        finally:
            worker.stop()
    for phase in phases:
        print(phase.summary())
    assert set(out.scored) == history.ids, "transactions lost"
    assert not out.dead, out.dead_reasons()
    for phase in phases:
        phase.notes["scored_during"] = len(phase.scored_during(out))
    await check_state(history, direct_redis_url, prefix)
    # once each: a transaction is four FCALLs (its id claimed, its card and its terminal updated, its outcome
    # recorded; features/ids.py, features/online.py), a fraud label one (its terminal)
    extra = fcall_calls(direct_redis_url) - calls_before - 4 * len(history.tx) - len(history.labels)
    return phases, metrics, extra


async def test_redis_slow_reset_and_black_holed(
    proxies: Proxies, redis_url: str, kafka_bootstrap: str, local_backend: str, tmp_path: Path
) -> None:
    tp = proxies.toxiproxy
    tp.reset()
    history = History.build(run_id("net-redis"), cards=FAULTS_CARDS, per_card=FAULTS_PER_CARD, seed=21)
    phases, metrics, extra = await stream_with_faults(proxies, redis_url, kafka_bootstrap, local_backend, tmp_path,
                                                      "faults", history, [
        ("latency", tp.toxic("redis", Toxic.latency(LATENCY_MS, jitter_ms=JITTER_MS)), LATENCY_S),
        ("reset", tp.toxic("redis", Toxic.reset_peer()), RESET_S),
        # longer than the client's 5 s socket timeout: the worker must notice by itself (Toxiproxy closes the
        # connections when the toxic is removed, which would hide a worker that waits forever)
        ("black hole", black_hole(tp, "redis"), BLACK_HOLE_S),
    ])
    latency, reset, hole = phases
    errors = backend_errors(metrics, "redis")
    print(f"redis errors by kind: {errors}; FCALLs executed again: {extra}")

    assert latency.notes["scored_during"] > 0, "a slow link must not stop the stream"
    assert "in Redis failed" not in latency.log, "200 ms is well within the client's 5 s timeout"
    for dead in (reset, hole):
        assert dead.notes["scored_during"] == 0, f"records scored while Redis was unreachable ({dead.name})"
        assert "in Redis failed" in dead.log, dead.log[-3000:]
        assert "in Redis recovered after" in dead.log, dead.log[-3000:]
        assert dead.recovered is not None and dead.recovered - dead.healed < 15.0, dead.summary()
    assert "no reply from redis for 5s" in hole.during, hole.during[-3000:]
    assert errors.get("TimeoutError", 0) >= 1 and errors.get("ConnectionError", 0) >= 1, errors
    # replies lost to the reset: Redis had executed those batches, the worker sent them again
    assert extra > 0, "no batch was executed twice: the reset did not hit a batch in flight"


async def test_redis_partition_30s_heals(
    proxies: Proxies, redis_url: str, kafka_bootstrap: str, local_backend: str, tmp_path: Path
) -> None:
    tp = proxies.toxiproxy
    tp.reset()
    history = History.build(run_id("net-part"), cards=PARTITION_CARDS, per_card=PARTITION_PER_CARD, seed=22)
    phases, metrics, _ = await stream_with_faults(proxies, redis_url, kafka_bootstrap, local_backend, tmp_path,
                                                  "partition", history, [
        ("partition", tp.disabled("redis"), PARTITION_S),
    ])
    (partition,) = phases
    errors = backend_errors(metrics, "redis")
    print(f"redis errors by kind: {errors}")
    assert partition.notes["scored_during"] == 0, "records scored while Redis was partitioned away"
    assert "in Redis failed" in partition.during and "Connection" in partition.during, partition.during[-3000:]
    assert "in Redis recovered after" in partition.log, partition.log[-3000:]
    assert partition.recovered is not None and partition.recovered - partition.healed < 15.0, partition.summary()
    assert errors.get("ConnectionError", 0) >= 3, errors  # refused again and again while it lasted


@pytest.fixture(scope="module")
def kafka_proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBehindProxy]:
    yield from start_kafka_behind_proxy(tmp_path_factory.mktemp("kafka-proxied"))


async def test_kafka_slow_reset_and_partitioned(
    kafka_proxied: KafkaBehindProxy, local_backend: str, tmp_path: Path
) -> None:
    """The worker's only way to the broker: 200 ms ± 100 ms on the broker's answers, then ``reset_peer`` on
    them (each connection reset as its next answer comes back: in the measured runs a fetch and a heartbeat,
    after which nothing was left to publish, so this is not a reset in the middle of a produce request), then
    cut for 30 s (the proxy disabled: fetches, commits and produce requests all fail) and restored. The
    group's session (60 s) outlives the partition: no rebalance is needed."""
    tp, kafka = kafka_proxied.toxiproxy, kafka_proxied.direct_bootstrap
    tp.reset()
    history = History.build(run_id("net-kafka"), cards=PARTITION_CARDS, per_card=PARTITION_PER_CARD, seed=23)
    run, topics = history.run, run_topics(history.run)
    await create_topics(kafka, topics)
    port = free_port()
    prefix = f"fs-{run}"
    env = worker_env(tmp_path, kafka_proxied.proxied_bootstrap, kafka_proxied.redis_url, local_backend, topics, run,
                     FRAUD_METRICS_PORT=str(port), FRAUD_FEATURE_KEY_PREFIX=prefix)
    async with Collector(kafka, topics) as collector:
        worker = launch(env, tmp_path / "worker-kafka.log")
        try:
            await wait_ready(worker)
            producing = asyncio.create_task(produce(kafka, history.records(topics), rate=RATE))
            await collector.wait(lambda o: len(o.scored) >= START_AFTER_SCORED, 120, "scored before the fault",
                                 worker=worker)
            slow = await fault(collector, worker, "kafka latency",
                               tp.toxic("kafka", Toxic.latency(LATENCY_MS, jitter_ms=JITTER_MS)), LATENCY_S)
            reset = await fault(collector, worker, "kafka reset", tp.toxic("kafka", Toxic.reset_peer()), RESET_S)
            partition = await fault(collector, worker, "kafka partition", tp.disabled("kafka"), PARTITION_S,
                                    recover_s=120, settle_s=3.0)
            await producing
            out = await collector.wait(lambda o: history.ids <= o.scored.keys(), 120, "every transaction",
                                       worker=worker)
            await wait_caught_up(kafka, run, topics.transactions, timeout_s=90)
            await wait_caught_up(kafka, run, topics.labels, timeout_s=90)
            metrics = scrape(port)
            assert worker.alive(), worker.tail(40)
        finally:
            worker.stop()
    for phase in (slow, reset, partition):
        print(phase.summary())
    print(f"kafka errors by kind: {backend_errors(metrics, 'kafka')}; "
          f"{out.scored_total - len(out.scored)} records scored twice (at-least-once)")
    print("worker log during the partition:\n" + "\n".join(partition.during.splitlines()[:8]))
    assert set(out.scored) == history.ids, "transactions lost"
    assert not out.dead, out.dead_reasons()
    assert slow.scored_during(out), "a slow link must not stop the stream"
    assert "KafkaConnectionError: Connection at" in reset.log, reset.log[-3000:]  # aiokafka saw the resets
    assert partition.notes["scored_at_heal"] == partition.notes["scored_after_settle"], \
        "records reached the broker while the worker was cut off from it"
    # what the worker says is aiokafka's own: every refused reconnect (thousands of lines for 30 s; see
    # docs/reliability.md), and the consumer-lag gauge stops moving
    assert "Unable connect to node" in partition.during and "Connection refused" in partition.during
    assert partition.recovered is not None and partition.recovered - partition.healed < 60.0, partition.summary()
    # a record scored twice (redelivered after the heal) changed no state: the features equal the offline
    # engine's on the history applied once
    await check_state(history, kafka_proxied.redis_url, prefix)


async def test_kafka_bandwidth_limited_then_black_holed(
    kafka_proxied: KafkaBehindProxy, local_backend: str, tmp_path: Path
) -> None:
    """The worker's only way to the broker, throttled to a few KB/s each way (slower than the stream needs),
    then a black hole (Toxiproxy's ``timeout`` toxic both ways: bytes dropped, no FIN, no RST) for 100 s.
    The worker has nothing but its clients' timeouts to notice a silent link: its heartbeats wait for an
    answer like any request, so the group session (10 s here, the coordinator expels the member after it)
    does not show on the worker's side; the publisher's produce request times out after 40 s (config/kafka.py)
    and faust's fetch, commit and heartbeat requests after 90 s (``broker_request_timeout``), and only then
    does the worker log ``Heartbeat session expired``. The hole outlasts both, so the worker must have noticed
    by itself before the heal; after it (removing the toxic closes the held connections) it finds it was
    expelled, rejoins and resumes from the committed offsets."""
    tp, kafka = kafka_proxied.toxiproxy, kafka_proxied.direct_bootstrap
    tp.reset()
    history = History.build(run_id("net-kbw"), cards=PARTITION_CARDS, per_card=PARTITION_PER_CARD, seed=25)
    run, topics = history.run, run_topics(history.run)
    await create_topics(kafka, topics)
    port = free_port()
    prefix = f"fs-{run}"
    env = worker_env(tmp_path, kafka_proxied.proxied_bootstrap, kafka_proxied.redis_url, local_backend, topics, run,
                     FRAUD_METRICS_PORT=str(port), FRAUD_FEATURE_KEY_PREFIX=prefix,
                     FRAUD_KAFKA_SESSION_TIMEOUT_S=str(KAFKA_SESSION_S))
    async with Collector(kafka, topics) as collector:
        worker = launch(env, tmp_path / "worker-kafka-bw.log")
        try:
            await wait_ready(worker)
            producing = asyncio.create_task(produce(kafka, history.records(topics), rate=RATE))
            await collector.wait(lambda o: len(o.scored) >= START_AFTER_SCORED, 120, "scored before the faults",
                                 worker=worker)
            with tp.toxic("kafka", Toxic.bandwidth(BANDWIDTH_KB_S, stream="upstream")), \
                    tp.toxic("kafka", Toxic.bandwidth(BANDWIDTH_KB_S, stream="downstream")):
                started = time.time()
                scored_before = collector.out.scored_total
                await asyncio.sleep(BANDWIDTH_S)
                scored_throttled = collector.out.scored_total - scored_before
                healed = time.time()
            throttled = Phase("kafka bandwidth", started, healed)
            await wait_recovered(collector, throttled, timeout_s=60)
            hole = await fault(collector, worker, "kafka black hole", black_hole(tp, "kafka"), KAFKA_BLACK_HOLE_S,
                               recover_s=120, settle_s=3.0)
            await producing
            out, metrics = await drain(collector, history.ids, kafka, run, topics, worker, port)
        finally:
            worker.stop()
    offered = RATE * BANDWIDTH_S
    throttled.notes["scored"] = scored_throttled
    for phase in (throttled, hole):
        print(phase.summary())
    print(f"kafka errors by kind: {backend_errors(metrics, 'kafka')}; "
          f"{out.scored_total - len(out.scored)} records scored twice (at-least-once)")
    print("worker log during the black hole:\n" + "\n".join(line[:400] for line in hole.during.splitlines()[:40]))
    after = hole.log[len(hole.during):]
    print("worker log after the heal:\n" + "\n".join(line[:400] for line in after.splitlines()[:40]))
    assert set(out.scored) == history.ids, "transactions lost"
    assert not out.dead, out.dead_reasons()
    assert 0 < scored_throttled < 0.8 * offered, f"{scored_throttled} scored in {BANDWIDTH_S:.0f}s: not slowed"
    assert throttled.recovered is not None
    assert hole.notes["scored_at_heal"] == hole.notes["scored_after_settle"], \
        "records reached the broker through a black hole"
    # noticed before the heal: the produce request's 40 s timeout, then the 90 s one of commits and heartbeats
    assert "Got error produce response: [Error 7] RequestTimedOutError" in hole.during, hole.during[-3000:]
    assert "Heartbeat session expired" in hole.during, hole.during[-3000:]
    assert "UnknownMemberIdError" in hole.log, hole.log[-3000:]  # expelled meanwhile: it rejoined by itself
    assert hole.recovered is not None and hole.recovered - hole.healed < 60.0, hole.summary()
    # redelivered after the rejoin, scored twice: the features still equal the offline engine's on the
    # history applied once
    await check_state(history, kafka_proxied.redis_url, prefix)


async def test_model_server_link_slow_and_partitioned(
    proxies: Proxies, redis_url: str, kafka_bootstrap: str, model_repo: Path, tmp_path: Path
) -> None:
    """The worker reaches the TF Serving servicer (in-process, real TensorFlow) through Toxiproxy: 200 ms ±
    100 ms is within the deadline (model scores, none degraded); a partition longer than the grace period
    degrades to rules-only scores after the grace, and the model scores again after the heal."""
    tp = proxies.toxiproxy
    tp.reset()
    history = History.build(run_id("net-model"), cards=MODEL_CARDS, per_card=MODEL_PER_CARD, seed=24,
                            label_share=0.0)
    run, topics, kafka = history.run, run_topics(history.run), kafka_bootstrap
    await create_topics(kafka, topics)
    port = free_port()
    async with serving(model_repo / "fraud_dnn") as server, Collector(kafka, topics) as collector:
        with contextlib.suppress(Exception):
            tp.delete_proxy("model")
        model = proxies.proxy_to("model", server.target)
        env = worker_env(tmp_path, kafka, redis_url, f"tfserving://{model}/fraud_dnn?label=stable", topics, run,
                         FRAUD_METRICS_PORT=str(port), FRAUD_FEATURE_KEY_PREFIX=f"fs-{run}",
                         FRAUD_MODEL_OUTAGE_GRACE_S=str(MODEL_GRACE_S), FRAUD_MODEL_DEADLINE_S=str(MODEL_DEADLINE_S))
        worker = launch(env, tmp_path / "worker-model.log")
        try:
            await wait_ready(worker)
            producing = asyncio.create_task(produce(kafka, history.records(topics), rate=RATE))
            await collector.wait(lambda o: len(o.scored) >= START_AFTER_SCORED, 120, "scored before the faults",
                                 worker=worker)
            latency = await fault(collector, worker, "model latency",
                                  tp.toxic("model", Toxic.latency(LATENCY_MS, jitter_ms=JITTER_MS)), LATENCY_S)
            partition = await fault(collector, worker, "model partition", tp.disabled("model"), MODEL_PARTITION_S)
            await collector.wait(lambda o: any(not r["degraded"] and scored_at(r) > partition.healed
                                               for r in o.scored.values()), 60, "model scores after the heal")
            await producing
            out = await collector.wait(lambda o: history.ids <= o.scored.keys(), 120, "every transaction",
                                       worker=worker)
            metrics = scrape(port)
            assert worker.alive(), worker.tail(40)
        finally:
            worker.stop()
    print(latency.summary())
    print(partition.summary())
    assert set(out.scored) == history.ids and not out.dead
    slow = latency.scored_during(out)
    assert slow and not any(r["degraded"] for r in slow), "200 ms ± 100 ms is within the deadline: not degraded"
    scored = partition.scored_during(out, offset_s=0.0)
    early = [r for r in scored if r["degraded"] and scored_at(r) < partition.started + MODEL_GRACE_S * 0.9]
    assert not early, "degraded before the grace period ended"
    degraded = [r for r in scored if r["degraded"]]
    assert degraded, "no rules-only scores during the partition"
    assert all(r["model_version"] is None for r in degraded)
    assert "model backend failing" in partition.during and "rules-only scoring" in partition.during
    whole = worker.log.read_text(errors="replace")  # the circuit's next probe ends the outage after the heal
    assert "model backend recovered" in whole[whole.find("model backend failing"):], whole[-3000:]
    errors = backend_errors(metrics, "model")
    print(f"{len(degraded)} degraded records during the partition; model errors by kind: {errors}")
    assert sum(errors.values()) > 0, errors
