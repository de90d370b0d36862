"""The reference figures of the end-to-end issue, re-measured against fraudstream's own Apache Kafka broker.

    .venv/bin/python -m fraudstream.bench.reference --json [--messages 200000] [--model-rows 200000]

In one run, on the local stack (started and stopped here when it is not up):

- ``aiokafka_produce_msg_per_s``: one ``send`` per record, acks=1, linger 5 ms;
- ``aiokafka_consume_parse_msg_per_s``: ``getmany`` + ``orjson.loads`` of every value;
- faust-streaming workers (separate processes, one consumer group each) reading the same topic with
  ``stream.take(1000, within=0.005)``: ``faust_nowork`` (count only), ``faust_send_per_event``
  (``await topic.send`` per event), ``faust_app_producer`` (the app's producer, one future per event,
  awaited per batch), and ``faust_nowork_eager_drain`` — fraudstream's consumer (streams/faust_patches.py)
  against faust's own (``faust_nowork``): an A/B of that change in one run;
- ``tf_rows_per_s_batch_1`` / ``_batch_256``: a real SavedModel (64-unit DNN over the feature list: 55 features
  in the figures of docs/benchmarks.md before #22, 68 since ``fraudstream_v2``).

Records are fraudstream's simulated transactions (~200 bytes of JSON), 4 partitions. Each faust figure
is the rate between its first and last batch, and the worker's CPU seconds per message over the same
span (steadier than rates on a shared machine). Progress on stderr; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from config.kafka import KafkaConnection, delete_topics, ensure_topics

FAUST_MODES = ("nowork", "nowork_eager_drain", "send_per_event", "app_producer")


def log(message: str) -> None:
    print(f"[bench reference] {message}", file=sys.stderr, flush=True)


async def produce(kafka: KafkaConnection, topic: str, values: list[bytes]) -> float:
    producer = kafka.producer(acks=1, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        start = time.perf_counter()
        for i in range(0, len(values), 10_000):
            futures = [await producer.send(topic, v) for v in values[i : i + 10_000]]
            await asyncio.gather(*futures)
        return len(values) / (time.perf_counter() - start)
    finally:
        await producer.stop()


async def consume_parse(kafka: KafkaConnection, topic: str, count: int) -> float:
    consumer = kafka.consumer(topic, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                              max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        seen, start = 0, None
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if start is None and batches:
                start = time.perf_counter()
            for messages in batches.values():
                for m in messages:
                    orjson.loads(m.value)
                seen += len(messages)
        return seen / (time.perf_counter() - (start or time.perf_counter()))
    finally:
        await consumer.stop()


def faust_worker(mode: str, bootstrap: str, topic: str, count: int, result: Path) -> None:
    """Runs in a child process: a faust app reading ``count`` records, then writes its figures and exits."""
    import faust

    from streams import faust_patches

    app = faust.App(f"bench-ref-{mode}-{uuid.uuid4().hex[:6]}", broker=f"kafka://{bootstrap}", env={},
                    value_serializer="raw", key_serializer="raw", web_enabled=False,
                    consumer_auto_offset_reset="earliest", topic_replication_factor=1,
                    stream_buffer_maxsize=4096, broker_max_poll_records=1000, producer_linger_ms=1,
                    datadir=str(result.parent / "faust-data"))
    if mode == "nowork_eager_drain":
        # the eager drain alone: no chunked topic, aiokafka's and faust's fetch bounds
        faust_patches.install(app, chunked_topics=(), fetch_min_bytes=1, fetch_max_wait_ms=1500)
    source = app.topic(topic, value_type=bytes)
    sink = app.topic(f"{topic}-out-{mode}", value_type=bytes)
    seen = {"n": 0, "first": 0}
    marks: dict[str, float] = {}

    @app.agent(source)
    async def consume(stream: Any) -> None:
        async for values in stream.take(1000, within=0.005):
            if not marks:
                marks.update(t=time.perf_counter(), cpu=time.process_time())
                seen["first"] = len(values)
            if mode == "send_per_event":
                for value in values:
                    await sink.send(value=value)
            elif mode == "app_producer":
                futures = [await app.producer.send(sink.get_topic_name(), None, value, None, None, None)
                           for value in values]
                await asyncio.gather(*futures)
            seen["n"] += len(values)
            if seen["n"] >= count:
                n = seen["n"] - seen["first"]
                wall, cpu = time.perf_counter() - marks["t"], time.process_time() - marks["cpu"]
                result.write_text(json.dumps({"msg_per_s": n / wall, "cpu_us_per_msg": cpu / n * 1e6}))
                os._exit(0)  # the figures are written; faust's orderly shutdown would only add seconds

    sys.argv = ["faust", "worker", "--loglevel", "warn"]
    app.main()


def run_faust(mode: str, bootstrap: str, topic: str, count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        argv = [sys.executable, "-m", "fraudstream.bench.reference", "--faust-worker", mode, "--bootstrap", bootstrap,
                "--topic", topic,
                "--messages", str(count), "--result", str(result)]
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600, check=False)
        if not result.exists():
            raise SystemExit(f"faust worker ({mode}) failed:\n{proc.stderr.decode()[-3000:]}")
        figures: dict[str, float] = json.loads(result.read_text())
        return figures


def tf_rows_per_s(rows: int) -> dict[str, float]:
    import tensorflow as tf

    from features import FEATURE_LIST
    from scoring.testing.model_factory import export_model

    with tempfile.TemporaryDirectory() as tmp:
        version = export_model(Path(tmp), feature_names=FEATURE_LIST.names, feature_hash=FEATURE_LIST.hash,
                               hidden=64)
        signature = tf.saved_model.load(str(version)).signatures["serving_default"]
        name = next(iter(signature.structured_input_signature[1]))
        out: dict[str, float] = {}
        for batch in (1, 256):
            x = tf.constant(np.random.default_rng(0).normal(size=(batch, len(FEATURE_LIST.names))), tf.float32)
            for _ in range(20):
                signature(**{name: x})
            calls = max(20, rows // batch // (50 if batch == 1 else 1))
            start = time.perf_counter()
            for _ in range(calls):
                signature(**{name: x})
            out[f"tf_rows_per_s_batch_{batch}"] = calls * batch / (time.perf_counter() - start)
        return out


async def kafka_figures(kafka: KafkaConnection, count: int) -> dict[str, Any]:
    from fraudstream.bench.e2e import payloads

    bootstrap = kafka.bootstrap  # the faust workers' (a local stack: plaintext)
    topic = f"bench-ref-{uuid.uuid4().hex[:6]}"
    await ensure_topics(kafka, {topic: 4, **{f"{topic}-out-{m}": 4 for m in FAUST_MODES}})
    try:
        values = [v for _, v in payloads(count, 7, "ref")]
        log(f"aiokafka: producing {count:,} records")
        figures: dict[str, Any] = {"aiokafka_produce_msg_per_s": await produce(kafka, topic, values)}
        log("aiokafka: consuming and parsing them")
        figures["aiokafka_consume_parse_msg_per_s"] = await consume_parse(kafka, topic, count)
        for mode in FAUST_MODES:
            log(f"faust worker, {mode}")
            result = await asyncio.to_thread(run_faust, mode, bootstrap, topic, count)
            figures[f"faust_{mode}_msg_per_s"] = result["msg_per_s"]
            figures[f"faust_{mode}_cpu_us_per_msg"] = result["cpu_us_per_msg"]
            log(f"  → {result['msg_per_s']:,.0f} msg/s, {result['cpu_us_per_msg']:.1f} µs CPU per message")
        return figures
    finally:
        await delete_topics(kafka, [topic, *(f"{topic}-out-{m}" for m in FAUST_MODES)])


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench_reference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000, help="records per Kafka figure")
    parser.add_argument("--model-rows", type=int, default=200_000, help="rows per TensorFlow figure")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--faust-worker", choices=FAUST_MODES, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.faust_worker:
        faust_worker(args.faust_worker, args.bootstrap, args.topic, args.messages, args.result)
        return 0

    from config.settings import load_settings
    from fraudstream.stack import LocalStack

    settings = load_settings()
    stack = LocalStack(settings.home, topics=settings.topics, transactions_partitions=settings.transactions_partitions)
    started = stack.ensure_up("[bench reference] starting the local stack")
    if started:
        settings = load_settings()
    load_before = os.getloadavg()
    try:
        result = asyncio.run(kafka_figures(settings.kafka, args.messages))
    finally:
        if started:
            stack.down()
    log("TensorFlow SavedModel, batch 1 and 256")
    result.update(tf_rows_per_s(args.model_rows))
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
