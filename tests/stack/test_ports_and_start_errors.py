"""Listening ports come from below the kernel's ephemeral range (so an outgoing connection cannot take one
between its pick and the bind), and a broker that dies at start-up is reported with its log and cause."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudstream.stack import kafka, process, redis_cluster
from fraudstream.stack.errors import StackError


def test_listening_ports_are_picked_below_the_ephemeral_range() -> None:
    floor = process.ephemeral_port_floor()
    assert 1024 < floor <= 65_535
    ports = {process.free_port() for _ in range(20)}
    assert all(process.LISTEN_PORT_MIN <= p < floor for p in ports)
    node = redis_cluster.free_node_port(set())
    assert node >= process.LISTEN_PORT_MIN and node + redis_cluster.BUS_PORT_OFFSET < floor


def test_a_broker_dead_at_start_up_is_reported_with_its_log_and_cause(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "[2026-12-07 22:40:01,000] INFO starting (kafka.server.KafkaRaftServer)\n"
        "[2026-12-07 22:40:02,000] ERROR Exiting Kafka due to fatal exception (kafka.Kafka$)\n"
        "org.apache.kafka.common.KafkaException: Socket server failed to bind to 127.0.0.1:21000: "
        "Address already in use.\n"
    )
    with pytest.raises(StackError) as caught:
        kafka.wait_healthy(f"127.0.0.1:{process.free_port()}", timeout_s=20, alive=lambda: False, log_path=log)
    message = str(caught.value)
    assert str(log) in message
    assert "Address already in use" in message


def test_the_log_cleaner_map_leaves_room_in_a_small_broker_heap(tmp_path: Path) -> None:
    """A three-broker stack gives each broker 256 MiB; the cleaner's default 128 MiB map, allocated at
    start-up, made one die with OutOfMemoryError (seen in the chaos suite)."""
    layout = kafka.KafkaLayout(data_dir=tmp_path / "data", config_file=tmp_path / "server.properties",
                               log_file=tmp_path / "kafka.log", port=21001, controller_port=21002)
    kafka.write_config(layout, default_partitions=3)
    props = dict(line.split("=", 1) for line in layout.config_file.read_text().splitlines() if "=" in line)
    assert int(props["log.cleaner.dedupe.buffer.size"]) <= 32 << 20
