"""Toxiproxy between the worker and its services, and what the worker says about itself while it is there.

The server is started through the project's own driver (``fraudstream/stack/toxiproxy.py``) and stopped
after the module. ``redis`` proxies the session stack's Redis; the tests' own producer, collector and
feature probe talk to the services directly, so the faults hit the worker only.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Topics
from fraudstream.stack import LocalStack
from fraudstream.stack.kafka import Listener
from fraudstream.stack.process import free_port
from fraudstream.stack.toxiproxy import ToxiproxyClient, ToxiproxyServer
from fraudstream.workers import WorkerProcess
from tests.fixtures.topics import Collected, Collector, wait_caught_up


@dataclass(frozen=True)
class Proxies:
    toxiproxy: ToxiproxyClient
    redis_url: str
    """The worker's Redis: through the proxy named ``redis``."""

    def proxy_to(self, name: str, upstream: str) -> str:
        """A new proxy to ``upstream`` (e.g. a broker listener); returns its ``host:port``."""
        listen = f"127.0.0.1:{free_port()}"
        self.toxiproxy.create_proxy(name, listen=listen, upstream=upstream)
        return listen


def start_proxies(workdir: Path, redis_port: int) -> Iterator[Proxies]:
    """Generator for a module fixture: the server and a proxy to Redis."""
    server = ToxiproxyServer(workdir)
    client = server.start()
    try:
        listen = f"127.0.0.1:{free_port()}"
        client.create_proxy("redis", listen=listen, upstream=f"127.0.0.1:{redis_port}")
        yield Proxies(client, f"redis://{listen}/0")
    finally:
        server.stop()


@dataclass(frozen=True)
class KafkaBehindProxy:
    toxiproxy: ToxiproxyClient
    direct_bootstrap: str
    """The broker's own listener: the test's producer, collector and lag checks."""
    proxied_bootstrap: str
    """The proxy named ``kafka``: the worker's only way to the broker."""
    redis_url: str


def start_kafka_behind_proxy(workdir: Path) -> Iterator[KafkaBehindProxy]:
    """Generator for a module fixture: Toxiproxy, then a stack of its own whose broker has a second listener
    *advertised* at the proxy's port. After bootstrap a Kafka client connects to the addresses the broker's
    metadata names; with only the bootstrap address proxied, the worker would bypass the proxy for every real
    request."""
    server = ToxiproxyServer(workdir / "toxiproxy")
    client = server.start()
    proxy_port, listener_port = free_port(), free_port()
    stack = LocalStack(workdir / "stack",
                       kafka_listeners=[Listener("PROXIED", listener_port, advertised_port=proxy_port)])
    try:
        state = stack.up(timeout_s=180)
        client.create_proxy("kafka", listen=f"127.0.0.1:{proxy_port}", upstream=f"127.0.0.1:{listener_port}")
        yield KafkaBehindProxy(client, state.bootstrap, f"127.0.0.1:{proxy_port}", state.redis_url)
    finally:
        stack.down()
        server.stop()


def scrape(port: int) -> dict[str, float]:
    """The worker's ``/metrics`` as ``name{label="value",…}`` → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def backend_errors(metrics: dict[str, float], backend: str) -> dict[str, float]:
    """``fraudstream_backend_errors_total`` of one backend, by kind."""
    prefix = f'fraudstream_backend_errors_total{{backend="{backend}",kind="'
    return {key[len(prefix):-2]: value for key, value in metrics.items() if key.startswith(prefix)}


def fcall_calls(redis_url: str) -> int:
    """FCALLs this Redis executed since it started (``INFO commandstats``)."""
    client = redis.Redis.from_url(redis_url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_fcall", {}).get("calls", 0))


def scored_at(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["scored_at"]).replace("Z", "+00:00")).timestamp()


@dataclass
class Phase:
    """One fault: when it began and was healed, when the stream moved again, what the worker logged."""

    name: str
    started: float
    healed: float
    during: str = ""
    """The worker's log while the fault lasted."""
    log: str = ""
    """Its log from the fault's start until the stream moved again."""
    recovered: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def scored_during(self, out: Collected, offset_s: float = 1.0) -> list[dict[str, Any]]:
        """Records scored from ``offset_s`` after the fault began until it was healed."""
        return [r for r in out.scored.values() if self.started + offset_s <= scored_at(r) < self.healed]

    def summary(self) -> str:
        back = "never" if self.recovered is None else f"{self.recovered - self.healed:.1f}s after the heal"
        extra = "".join(f", {k} {v}" for k, v in self.notes.items())
        return f"{self.name}: {self.healed - self.started:.1f}s, stream moving again {back}{extra}"


async def wait_recovered(collector: Collector, phase: Phase, *, timeout_s: float, records: int = 20) -> None:
    """Until ``records`` transactions were scored after the heal; notes when the first one was."""
    def moving(out: Collected) -> bool:
        after = sorted(t for t in (scored_at(r) for r in out.scored.values()) if t >= phase.healed)
        if after:
            phase.recovered = after[0]
        return len(after) >= records

    await collector.wait(moving, timeout_s, f"the stream to move again after the {phase.name}")


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))


async def drain(collector: Collector, ids: set[str], kafka: str, group: str, topics: Topics, worker: WorkerProcess,
                port: int) -> tuple[Collected, dict[str, float]]:
    """After a fault test's traffic: every transaction scored, the worker's group caught up on both topics
    (offsets committed), the worker's metrics, and the worker still alive."""
    out = await collector.wait(lambda o: ids <= o.scored.keys(), 120, "every transaction", worker=worker)
    await wait_caught_up(kafka, group, topics.transactions, timeout_s=60)
    await wait_caught_up(kafka, group, topics.labels, timeout_s=60)
    metrics = scrape(port)
    assert worker.alive(), worker.tail(40)
    return out, metrics
