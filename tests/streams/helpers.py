"""Helpers for integration tests that run real worker processes against the session's stack."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from config.kafka import assign_at_end
from config.settings import Topics
from fraudstream.workers import WorkerProcess, spawn_worker
from fraudstream.workers import worker_env as fraud_worker_env


def worker_env(home: Path, bootstrap: str, redis_url: str, model_backend: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
        **fraud_worker_env(home=home, bootstrap=bootstrap, redis_url=redis_url, model_backend=model_backend,
                           FRAUD_METRICS_PORT="0", **extra),
    }


def start_worker(env: dict[str, str], log: Path) -> WorkerProcess:
    return spawn_worker(env, log)


async def produce(bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes]]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)


@dataclass
class Outputs:
    scored: dict[str, dict[str, Any]] = field(default_factory=dict)
    scored_count: int = 0
    dead: list[dict[str, Any]] = field(default_factory=list)

    def dead_ids(self, marker: str) -> list[dict[str, Any]]:
        return [d for d in self.dead if marker.encode() in base64.b64decode(d["original_b64"])]


class OutputReader:
    """Reads ``scored-transactions`` and the DLQ from the offsets they had when it was opened."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.topics = topics
        self.bootstrap = bootstrap
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.outputs = Outputs()

    async def __aenter__(self) -> OutputReader:
        await self.consumer.start()
        await assign_at_end(self.consumer, self.bootstrap, [self.topics.scored, self.topics.dead_letter])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def read_until(self, done: Any, timeout_s: float) -> Outputs:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done(self.outputs):
            batches = await self.consumer.getmany(timeout_ms=300)
            for tp, messages in batches.items():
                for m in messages:
                    record = orjson.loads(m.value)
                    if tp.topic == self.topics.scored:
                        self.outputs.scored[record["transaction_id"]] = record
                        self.outputs.scored_count += 1
                    else:
                        self.outputs.dead.append(record)
        return self.outputs


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
