"""The worker and ``features rebuild`` really authenticate to Kafka with SASL/SCRAM-SHA-512.

A second broker (same jars as the local stack) with a PLAINTEXT listener for the test's own clients and a
SASL_PLAINTEXT listener whose only credential is a SCRAM user created at format time, as docker-compose
does. A worker configured with that user scores through the SASL listener; with a wrong password it
never gets a partition; the rebuild and the trainer's ``kafka://`` input read the topics through it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from config.settings import Settings
from fraudstream.stack import kafka, process
from fraudstream.stack.errors import StackError
from tests.fixtures.history import History
from tests.fixtures.topics import Collector, private_topics, produce
from tests.fixtures.workers import launch, wait_ready, worker_env
from training.topics import load_topics

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
USER, PASSWORD = "fraud-worker", "scram-pw-" + uuid.uuid4().hex[:8]
WRONG = "wrong-pw-" + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class ScramBroker:
    plaintext: str
    sasl: str


def _config(path: Path, data: Path, plain: int, sasl: int, controller: int) -> None:
    path.write_text("\n".join([
        "process.roles=broker,controller", "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller}",
        f"listeners=PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl},"
        f"CONTROLLER://127.0.0.1:{controller}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl}",
        "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        f"log.dirs={data}", "num.partitions=4", "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4", "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1", "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1", "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true", "",
    ]))


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory: pytest.TempPathFactory, local_stack: object) -> Iterator[ScramBroker]:
    home = tmp_path_factory.mktemp("scram-broker")
    libs = kafka.ensure_jars(kafka.default_jar_cache())
    plain, sasl, controller = process.free_port(), process.free_port(), process.free_port()
    config, data = home / "server.properties", home / "data"
    _config(config, data, plain, sasl, controller)
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
    fmt = subprocess.run(
        kafka.java_command(libs, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                           "-c", str(config), "--add-scram",
                           f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]", heap="256m"),
        capture_output=True, text=True, check=False,
    )
    assert fmt.returncode == 0, fmt.stdout[-2000:] + fmt.stderr[-2000:]
    pid = process.spawn(kafka.java_command(libs, "kafka.Kafka", str(config)), log_path=home / "kafka.log")
    try:
        kafka.wait_healthy(f"127.0.0.1:{plain}", timeout_s=90, alive=lambda: process.is_alive(pid))
        yield ScramBroker(plaintext=f"127.0.0.1:{plain}", sasl=f"127.0.0.1:{sasl}")
    except StackError as exc:
        pytest.fail(f"{exc}\n{(home / 'kafka.log').read_text(errors='replace')[-3000:]}")
    finally:
        process.stop(pid, timeout_s=30)


async def test_worker_and_rebuild_authenticate_with_scram(
    scram_broker: ScramBroker, redis_url: str, local_backend: str, tmp_path: Path
) -> None:
    run, topics = await private_topics(scram_broker.plaintext, "scram")
    history = History.build(run, cards=20, per_card=10, seed=8)
    await produce(scram_broker.plaintext, history.records(topics))
    sasl = {"FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "FRAUD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "FRAUD_KAFKA_SASL_USERNAME": USER, "FRAUD_FEATURE_KEY_PREFIX": f"fs-{run}"}
    env = worker_env(tmp_path, scram_broker.sasl, redis_url, local_backend, topics, run,
                     FRAUD_KAFKA_SASL_PASSWORD=PASSWORD, **sasl)

    # A wrong password: the broker refuses the worker, which never scores anything.
    bad_env = worker_env(tmp_path, scram_broker.sasl, redis_url, local_backend, topics, f"{run}-bad",
                         FRAUD_KAFKA_SASL_PASSWORD=WRONG, **sasl)
    async with Collector(scram_broker.plaintext, topics) as collector:
        bad = launch(bad_env, tmp_path / "worker-bad.log")
        try:
            for _ in range(240):  # until the broker's refusal shows in the log (a minute at most)
                if "SaslAuthenticationFailed" in bad.log.read_text(errors="replace"):
                    break
                await asyncio.sleep(0.25)
            assert not collector.out.scored
        finally:
            bad.stop()
        log = bad.log.read_text(errors="replace")
        assert "SaslAuthenticationFailed" in log, bad.tail(30)
        assert WRONG not in log, "a password was logged"

        worker = launch(env, tmp_path / "worker.log")
        try:
            await wait_ready(worker)
            out = await collector.wait(lambda o: history.ids <= o.scored.keys(), 120, "every transaction",
                                       worker=worker)
        finally:
            worker.stop()
    assert set(out.scored) == history.ids
    assert PASSWORD not in worker.log.read_text(errors="replace")

    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "fraudstream", "features", "rebuild", "--replace", "--verify"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["transactions"] == len(history.tx) and report["max_rel_diff"] <= 1e-6

    # The trainer's kafka:// input reads the same topics through the SASL listener with the same settings.
    secured = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
                       kafka_sasl_username=USER, kafka_sasl_password=SecretStr(PASSWORD), topics=topics)
    replayed, labels = await asyncio.to_thread(load_topics, f"kafka://{scram_broker.sasl}", settings=secured)
    assert set(replayed["transaction_id"]) == history.ids
    assert len(labels) == len(history.labels)


async def test_every_kafka_helper_and_command_authenticates_with_scram(scram_broker: ScramBroker,
                                                                       tmp_path: Path) -> None:
    """The clients built by ``settings.kafka`` (config/kafka.py) carry SASL everywhere: the topic helpers,
    the producer behind simulate/replay/resubmit, the tail, the trainer's status publisher, the CLI's probe
    and ``fraudstream tail`` itself, all through the SASL listener; a wrong password is refused."""
    from aiokafka.errors import KafkaError

    from config.kafka import delete_topics, ensure_topics, partitions_of
    from fraudstream.cli.services import require_kafka
    from fraudstream.sources.producer import OutboundRecord, produce
    from fraudstream.topictools.tail import TailOptions, tail
    from schemas.retrain import RetrainStatus
    from training.triggers import KafkaStatusPublisher

    def secured(password: str) -> Settings:
        return Settings(_env_file=None, kafka_bootstrap=scram_broker.sasl,  # type: ignore[call-arg]
                        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
                        kafka_sasl_username=USER, kafka_sasl_password=SecretStr(password))

    settings = secured(PASSWORD)
    topic, status_topic = f"scram-helpers-{uuid.uuid4().hex[:6]}", f"scram-status-{uuid.uuid4().hex[:6]}"
    assert await ensure_topics(settings.kafka, {topic: 2, status_topic: 1}) == [topic, status_topic]
    try:
        assert len(await partitions_of(settings.kafka, [topic])) == 2
        await asyncio.to_thread(require_kafka, settings)
        report = await produce(settings.kafka, [OutboundRecord(topic, b"card-1", b'{"n": 1}')], quiet=True)
        assert report.sent == 1
        seen: list[dict[str, object]] = []
        assert await tail(settings.kafka, TailOptions(topic, from_beginning=True, max_records=1), seen.append) == 1
        assert seen[0]["value"] == {"n": 1}
        publisher = KafkaStatusPublisher(settings.kafka, status_topic)
        await publisher.start()
        try:
            await publisher(RetrainStatus(request_id="scram-1", state="queued", at=datetime.now(UTC)))
        finally:
            await publisher.close()
        assert len(await partitions_of(settings.kafka, [status_topic])) == 1

        env = {"FRAUD_HOME": str(tmp_path), "FRAUD_KAFKA_BOOTSTRAP": scram_broker.sasl,
               "FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "FRAUD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
               "FRAUD_KAFKA_SASL_USERNAME": USER, "FRAUD_KAFKA_SASL_PASSWORD": PASSWORD}
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "fraudstream", "tail", topic, "--from-beginning", "--max", "1"],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads(result.stdout.strip().splitlines()[-1])["value"] == {"n": 1}

        with pytest.raises((KafkaError, OSError)):
            await ensure_topics(secured(WRONG).kafka, {f"{topic}-refused": 1})
    finally:
        await delete_topics(settings.kafka, [topic, status_topic])
