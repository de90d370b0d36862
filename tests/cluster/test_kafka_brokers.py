"""`fraudstream stack up --brokers 3 --redis-cluster 3` through the real CLI, in a private home: three KRaft
brokers and a Redis Cluster beside them; stack.env lists every broker and says how topics are replicated;
every stack topic has three in-sync replicas and ``min.insync.replicas=2``; an idempotent ``acks=all``
producer writes through the bootstrap list; `up` again reuses the running brokers; `down` stops them all.
(A broker's loss mid-stream: tests/chaos/test_kafka_leader_loss.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from config.settings import Topics
from fraudstream.stack.process import is_alive
from tests.fixtures.brokers import describe_partitions, topic_config

# three JVM brokers started and stopped through the CLI: ~1-3 min, with the long tests of `make test-chaos`
# (it keeps `make test` under 15 min)
pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def fraudstream(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in ``home``, without the caller's FRAUD_* variables; patient (three JVMs on a shared box)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    env["FRAUD_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "fraudstream", *args], env=env, capture_output=True, text=True,
                          timeout=420, check=False)


async def produce_acks_all(bootstrap: str, topic: str) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"probe", key=b"probe")
    finally:
        await producer.stop()
    return sent.offset


def test_stack_up_with_three_brokers_and_a_redis_cluster(tmp_path: Path) -> None:
    up = fraudstream(tmp_path, "stack", "up", "--brokers", "3", "--redis-cluster", "3", "--timeout", "300")
    assert up.returncode == 0, up.stderr
    pids: list[int] = []
    try:
        env = dict(line.split("=", 1) for line in (tmp_path / "stack.env").read_text().splitlines())
        bootstrap = env["FRAUD_KAFKA_BOOTSTRAP"]
        assert len(bootstrap.split(",")) == 3 and len(set(bootstrap.split(","))) == 3, bootstrap
        assert env["FRAUD_KAFKA_REPLICATION_FACTOR"] == "3" and env["FRAUD_KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["FRAUD_REDIS_CLUSTER"] == "true"

        status = fraudstream(tmp_path, "stack", "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        info = json.loads(status.stdout.splitlines()[-1])
        assert info["kafka"]["healthy"] and info["redis"]["healthy"] and info["redis"]["primaries"] == 3
        nodes = info["kafka"]["brokers"]
        assert [n["node_id"] for n in nodes] == [1, 2, 3] and all(n["healthy"] for n in nodes)
        pids = info["kafka"]["pid"]
        assert len(set(pids)) == 3 and all(is_alive(p) for p in pids)
        text = fraudstream(tmp_path, "stack", "status").stdout
        assert text.count("kafka node ") == 3, text

        for topic in Topics().model_dump().values():
            partitions = asyncio.run(describe_partitions(bootstrap, topic))
            for p in partitions.values():
                assert len(p.replicas) == 3 and sorted(p.isr) == [1, 2, 3], (topic, partitions)
            assert asyncio.run(topic_config(bootstrap, topic, "min.insync.replicas")) == "2", topic
        leaders = {p.leader for p in asyncio.run(describe_partitions(bootstrap, Topics().transactions)).values()}
        assert len(leaders) >= 2, f"every transactions partition is led by one broker: {leaders}"
        assert asyncio.run(produce_acks_all(bootstrap, Topics().transactions)) >= 0

        again = fraudstream(tmp_path, "stack", "up", "--brokers", "3", "--redis-cluster", "3")
        assert again.returncode == 0, again.stderr
        info_again = json.loads(fraudstream(tmp_path, "stack", "status", "--json").stdout.splitlines()[-1])
        assert info_again["kafka"]["pid"] == pids  # the running brokers are reused
    finally:
        down = fraudstream(tmp_path, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert all(f"kafka-{n} (pid" in down.stdout for n in (1, 2, 3)), down.stdout
    assert [p for p in pids if is_alive(p)] == []
    assert not (tmp_path / "stack.env").exists()


def test_two_brokers_are_refused(tmp_path: Path) -> None:
    up = fraudstream(tmp_path, "stack", "up", "--brokers", "2")
    assert up.returncode == 2 and "--brokers is 1 or at least 3" in up.stderr
    assert not (tmp_path / "stack.env").exists()
