"""The capacity model's arithmetic (``fraudstream bench capacity``) on a synthetic ``bench e2e`` result, and
how ``bench e2e --redis-cluster N`` meters each node: on a real 3-primary cluster started through the stack's
code, the CPU of the node that did the work is that node's, not the others'."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.redis import RedisConnection
from fraudstream.bench.capacity import Assumptions, costs_from, fit, fitted_costs, main, plan
from fraudstream.bench.components import (
    Metered,
    component_costs,
    cpu_seconds,
    per_tx,
    redis_shape,
    stack_processes,
)
from fraudstream.cli.bench import _other_redis_shape
from fraudstream.stack.manager import LocalStack, StackState
from tests.fixtures.stack import require_redis_server

SYNTHETIC = {
    "cpu_us_per_tx": {"worker": 60.0, "redis_nodes": [30.0, 20.0, 10.0], "redis_primaries": 3, "redis_total": 60.0,
                      "redis_busiest_primary": 30.0, "kafka_brokers": [10.0], "kafka_total": 10.0, "bench": 5.0},
}


def test_the_plan_is_rate_times_cost_over_utilisation_per_component() -> None:
    costs = costs_from(SYNTHETIC)
    assert costs.redis_imbalance == 1.5  # the busiest primary does 30 of the mean 20 µs

    p = plan(10_000, costs, Assumptions(utilisation=0.6, replication_factor=3, broker_cores=4))

    # workers: 10,000 x 60 µs = 0.6 cores, at 60 % of a core: 1.0
    assert (p.worker_cores, p.workers) == (1.0, 1)
    # Redis: 10,000 x 60 µs x 1.5 / 0.6 = 1.5 cores: two shards (one core each)
    assert (p.redis_cores, p.redis_shards) == (1.5, 2)
    # brokers: 10,000 x 10 µs x 3 / 0.6 = 0.5 cores; at least the replication factor
    assert (p.broker_cores, p.brokers) == (0.5, 3)
    assert p.partitions == 3  # 2 per worker, up to a multiple of the 3 brokers
    assert p.total_cores == 3.0


def test_at_50k_the_brokers_and_partitions_follow_the_cores() -> None:
    p = plan(50_000, costs_from(SYNTHETIC), Assumptions(utilisation=0.5, replication_factor=3, broker_cores=1))

    assert (p.worker_cores, p.workers) == (6.0, 6)
    assert (p.redis_cores, p.redis_shards) == (9.0, 9)
    assert (p.broker_cores, p.brokers) == (3.0, 3)
    assert p.partitions == 12


def test_a_single_node_result_has_no_imbalance_and_a_result_without_costs_is_refused() -> None:
    single = {"cpu_us_per_tx": {"worker": 70.0, "redis_nodes": [66.0], "redis_primaries": 1, "redis_total": 66.0,
                                "redis_busiest_primary": 66.0, "kafka_brokers": [6.0], "kafka_total": 6.0}}
    assert costs_from(single).redis_imbalance == 1.0
    with pytest.raises(ValueError, match="no cpu_us_per_tx_at_fixed_rate"):
        costs_from(single, at="fixed_rate")


def test_the_command_prints_the_table_from_the_last_line_of_a_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "e2e.json"
    source.write_text("progress is on stderr, but a file may hold more lines\n" + json.dumps(SYNTHETIC) + "\n")
    args = argparse.Namespace(source=str(source), costs=None, at="saturation", rates="1000,10000", utilisation=0.6,
                              replication_factor=3, broker_cores=4, json=True)

    assert main(args) == 0
    plans = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["plans"]
    assert [(p["rate_tps"], p["workers"], p["redis_shards"], p["brokers"]) for p in plans] == [
        (1000.0, 1, 1, 3), (10000.0, 1, 2, 3)]


def test_per_tx_reports_each_node_and_the_component_sums() -> None:
    procs = [Metered("worker", "worker-0", 1), Metered("redis", "a", 2, "primary"), Metered("redis", "b", 3, "primary"),
             Metered("kafka", "k", 4)]
    cpu = per_tx(procs, {1: 0.0, 2: 0.0, 3: 1.0, 4: 0.0}, {1: 0.2, 2: 0.05, 3: 1.1, 4: 0.01}, 1000)

    assert cpu["worker_cpu_us_per_tx"] == 200.0
    assert [n["cpu_us_per_tx"] for n in cpu["redis_nodes"]] == [50.0, 100.0]
    assert cpu["redis_cpu_us_per_tx"] == 150.0
    costs = component_costs(cpu)
    assert (costs["redis_total"], costs["redis_busiest_primary"], costs["kafka_brokers"]) == (150.0, 100.0, [10.0])


@pytest.fixture(scope="module")
def cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The stack's Redis part as ``bench e2e --redis-cluster 3`` starts it (``LocalStack`` with a cluster of
    3 primaries, its state in stack.json), without Kafka: the metering reads no broker here."""
    require_redis_server()
    stack = LocalStack(tmp_path_factory.mktemp("bench-cluster"), redis_cluster=3)
    state = StackState()
    try:
        stack._up_redis_cluster(state, 60)
        stack._save(state)
        yield stack
    finally:
        stack.down()


def test_each_cluster_node_is_metered_on_its_own(cluster_stack: LocalStack) -> None:
    processes = stack_processes(cluster_stack.home, [])
    nodes = [m for m in processes if m.kind == "redis"]
    assert len(nodes) == 3 and {m.role for m in nodes} == {"primary"}
    assert len({m.pid for m in nodes}) == 3

    busy = nodes[0]
    before = {m.pid: cpu_seconds(m.pid) for m in processes}
    client = RedisConnection(url=f"redis://{busy.name}").sync_client()
    try:  # CPU on this node only: a keyless script that counts for a while (no key, so no redirect)
        client.eval("local x = 0 for i = 1, 20000000 do x = x + i end return 1", 0)
    finally:
        client.close()
    after = {m.pid: cpu_seconds(m.pid) for m in processes}
    cpu = per_tx(processes, before, after, 1000)

    by_node = {n["node"]: n["cpu_us_per_tx"] for n in cpu["redis_nodes"]}
    # 20 M Lua additions: ~0.1-0.5 s of one core, 100-500 µs per "transaction" of 1,000; an idle node's
    # cluster cron and gossip take a few ms in that time
    assert by_node[busy.name] > 50
    assert all(us < by_node[busy.name] / 4 for node, us in by_node.items() if node != busy.name), by_node
    assert cpu["redis_cpu_us_per_tx"] == pytest.approx(sum(by_node.values()), abs=0.2)


def test_bench_e2e_runs_on_the_stack_only_when_its_redis_has_the_asked_shape(cluster_stack: LocalStack) -> None:
    assert redis_shape(cluster_stack.home) == 3
    assert _other_redis_shape(cluster_stack, 3) == ""
    assert "runs a Redis Cluster of 3 primaries, not a cluster of 6" in _other_redis_shape(cluster_stack, 6)


def test_the_e2e_command_takes_the_cluster_shape_and_refuses_fewer_than_three_primaries(
    capsys: pytest.CaptureFixture[str]
) -> None:
    from fraudstream.cli import build_parser
    from fraudstream.cli import main as cli_main

    assert build_parser().parse_args(["bench", "e2e", "--redis-cluster", "3"]).redis_cluster == 3
    assert cli_main(["bench", "e2e", "--redis-cluster", "2"]) == 2
    assert "at least 3 primaries" in capsys.readouterr().err


def test_the_fit_splits_a_fixed_share_of_a_core_from_the_cost_per_transaction() -> None:
    # a worker that idles at 0.1 core and spends 50 µs per transaction; a broker that costs 0.2 core flat
    def phase(rate: float) -> dict[str, object]:
        worker = (0.1 + rate * 50e-6) / rate * 1e6
        redis = 40.0
        kafka = 0.2 / rate * 1e6
        return {"delivered_tps": rate, "throughput_tps": rate, "cpu": {
            "worker_cpu_us_per_tx": worker, "redis_cpu_us_per_tx": redis, "kafka_cpu_us_per_tx": kafka,
            "redis_nodes": [{"node": "a", "cpu_us_per_tx": redis}],
            "kafka_brokers": [{"node": "k", "cpu_us_per_tx": kafka}]}}

    result = {"phases": {"share_10": phase(100), "share_50": phase(500), "latency": phase(1000),
                         "batched": phase(2000), "echo": phase(9000), "naive": None}}
    costs = fitted_costs(result)

    assert (costs.worker_fixed, costs.worker) == (0.1, 50.0)
    assert (costs.redis_fixed, costs.redis_total) == (0.0, 40.0)
    assert (costs.kafka_fixed, costs.kafka_total) == (0.2, 0.0)  # the echo phase (no Redis) is not a point
    p = plan(10_000, costs, Assumptions(utilisation=0.6, replication_factor=3, broker_cores=1))
    # 0.5 cores of work; each worker has 0.6 - 0.1 = 0.5 cores of room: one worker
    assert (p.workers, p.worker_cores) == (1, 1.0)


def test_a_flat_or_falling_cost_is_all_fixed() -> None:
    assert fit([(100, 0.2), (1000, 0.18), (2000, 0.19)])[1] == 0.0
    assert fit([(100, 0.01), (1000, 0.1)]) == (0.0, 100.0)


def test_costs_given_by_hand_give_the_same_plan_as_a_result_with_those_costs(
    capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(source=None, costs="worker=60,redis=40,kafka=10", at="saturation", rates="10000",
                              utilisation=0.6, replication_factor=3, broker_cores=4, json=True)

    assert main(args) == 0
    (row,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["plans"]
    # Redis 10,000 x 40 µs / 0.6 = 0.67 cores: one shard (no imbalance given)
    assert (row["workers"], row["redis_shards"], row["brokers"], row["partitions"]) == (1, 1, 3, 3)
    assert main(argparse.Namespace(**{**vars(args), "costs": "worker=60"})) == 2
