"""Kafka over TLS: the worker and the CLI reach the broker only through its SSL and SASL_SSL listeners.

A stack of its own, started through the project's code (``LocalStack`` with the listeners and keystore of
``fraudstream/stack/tls.py``: a CA and a broker certificate made with the JDK's ``keytool``). The clients are
configured by the settings alone (``FRAUD_KAFKA_SECURITY_PROTOCOL``, ``FRAUD_KAFKA_SSL_CAFILE``, SCRAM user
and password): ``fraudstream simulate`` writes transactions over SSL, the worker scores them over SASL_SSL,
``fraudstream tail`` reads the scores back over SASL_SSL. The test's own collector uses the broker's
PLAINTEXT listener. A client without the CA is refused, with one clear line.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fraudstream.stack import LocalStack
from fraudstream.stack.process import free_port
from fraudstream.stack.tls import BrokerTls, ensure_broker_tls
from tests.fixtures.topics import Collector, create_topics, run_id, run_topics
from tests.fixtures.workers import launch, wait_ready, worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
COUNT = 300


@dataclass(frozen=True)
class TlsStack:
    tls: BrokerTls
    plaintext: str
    ssl: str
    sasl_ssl: str
    redis_url: str


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    home = tmp_path_factory.mktemp("tls-stack")
    tls = ensure_broker_tls(home / "tls")
    ssl_port, sasl_port = free_port(), free_port()
    stack = LocalStack(home / "stack", kafka_listeners=tls.listeners(ssl_port, sasl_port),
                       kafka_properties=tls.broker_properties(), scram_users=tls.scram_users)
    try:
        state = stack.up(timeout_s=180)
        yield TlsStack(tls, state.bootstrap, f"127.0.0.1:{ssl_port}", f"127.0.0.1:{sasl_port}", state.redis_url)
    finally:
        stack.down()


def cli(env: dict[str, str], *args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fraudstream", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout_s, check=False)


async def test_worker_and_cli_over_tls(tls_stack: TlsStack, local_backend: str, tmp_path: Path) -> None:
    run = run_id("tls")
    topics = run_topics(run)
    await create_topics(tls_stack.plaintext, topics)
    topic_env = {f"FRAUD_TOPICS__{k.upper()}": v for k, v in topics.model_dump().items()}
    base = {"FRAUD_HOME": str(tmp_path), "FRAUD_REDIS_URL": tls_stack.redis_url, **topic_env}
    over_ssl = {**base, "FRAUD_KAFKA_BOOTSTRAP": tls_stack.ssl, **tls_stack.tls.client_env("SSL")}
    over_sasl_ssl = {**base, "FRAUD_KAFKA_BOOTSTRAP": tls_stack.sasl_ssl, **tls_stack.tls.client_env("SASL_SSL")}

    env = worker_env(tmp_path, tls_stack.sasl_ssl, tls_stack.redis_url, local_backend, topics, run,
                     FRAUD_FEATURE_KEY_PREFIX=f"fs-{run}", **tls_stack.tls.client_env("SASL_SSL"))
    async with Collector(tls_stack.plaintext, topics) as collector:
        worker = launch(env, tmp_path / "worker.log")
        try:
            await wait_ready(worker)
            simulated = await asyncio.to_thread(cli, over_ssl, "simulate", "--count", str(COUNT), "--seed", "5")
            assert simulated.returncode == 0, simulated.stderr[-3000:]
            report = json.loads(simulated.stdout.strip().splitlines()[-1])
            assert report["transactions"] == COUNT
            out = await collector.wait(lambda o: len(o.scored) + len(o.dead) >= COUNT, 120,
                                       f"{COUNT} transactions scored", worker=worker)
        finally:
            worker.stop()
    assert len(out.scored) == COUNT and not out.dead, out.dead_reasons()
    log = worker.log.read_text(errors="replace")
    assert tls_stack.tls.client_password not in log, "the SASL password was logged"

    # the CLI reads the scores back through the SASL_SSL listener
    tailed = await asyncio.to_thread(cli, over_sasl_ssl, "tail", topics.scored, "--from-beginning",
                                     "--max", str(COUNT))
    assert tailed.returncode == 0, tailed.stderr[-3000:]
    ids = {json.loads(line)["value"]["transaction_id"] for line in tailed.stdout.splitlines() if line.strip()}
    assert ids == set(out.scored)


async def test_client_without_the_ca_is_refused(tls_stack: TlsStack, tmp_path: Path) -> None:
    """TLS with the system's CAs only: the broker's certificate does not verify; one line says so."""
    env = {"FRAUD_HOME": str(tmp_path), "FRAUD_KAFKA_BOOTSTRAP": tls_stack.ssl,
           "FRAUD_KAFKA_SECURITY_PROTOCOL": "SSL"}
    result = await asyncio.to_thread(cli, env, "tail", "transactions", "--max", "1", timeout_s=120)
    print(result.stderr)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ") and "certificate" in lines[0], lines[0]
    assert "FRAUD_KAFKA_SSL_CAFILE" in lines[0], lines[0]
    assert not result.stdout.strip()
