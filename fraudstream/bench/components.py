"""The processes ``bench e2e`` meters, one by one: the worker(s), every Redis node (the one ``redis-server``
or each node of a local Redis Cluster), every Kafka broker and the bench itself; and what their CPU per
transaction comes to, per process and per component.

Per process because a capacity model needs the cost of one Redis shard and of one broker, not only the
sum: a cluster whose total is flat but whose shards are uneven needs as many shards as its busiest one
says. The CPU is read from ``/proc/<pid>/stat`` (user + system, all threads), the same way for every
process, so a node's figure and the worker's are comparable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from config.redis import RedisConnection
from fraudstream.stack.manager import LocalStack
from fraudstream.stack.redis_cluster import ClusterState

KINDS = ("worker", "redis", "kafka", "bench")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Metered:
    """One metered process: its component (``KINDS``), a name that says which one (``127.0.0.1:7001``),
    its role where it has one (a Redis node's ``primary`` / ``replica``)."""

    kind: str
    name: str
    pid: int
    role: str = ""


def redis_role(port: int) -> str:
    """``primary`` or ``replica`` as the node says now (a failover may have swapped them since ``up``)."""
    client = RedisConnection(url=f"redis://127.0.0.1:{port}").sync_client(socket_connect_timeout=1, socket_timeout=1)
    try:
        role = str(client.info("replication").get("role", ""))
    except redis.RedisError:
        return ""
    finally:
        client.close()
    return {"master": "primary", "slave": "replica"}.get(role, role)


def cluster_nodes(state: ClusterState) -> list[Metered]:
    return [Metered("redis", f"127.0.0.1:{n.port}", n.pid, redis_role(n.port)) for n in state.nodes if n.pid]


def stack_processes(home: Path, worker_pids: list[int]) -> list[Metered]:
    """The stack's processes under ``home`` (every cluster node when it runs a Redis Cluster), the given
    workers and this process; only those alive now."""
    stack = LocalStack(home)
    state = stack.load()
    metered = [Metered("worker", f"worker-{i}", pid) for i, pid in enumerate(worker_pids)]
    if state.redis_cluster:
        metered += cluster_nodes(stack.cluster.load())
    elif state.redis.pid:
        metered.append(Metered("redis", f"127.0.0.1:{state.redis.port}", state.redis.pid, "primary"))
    metered += [Metered("kafka", f"127.0.0.1:{broker.port}", broker.pid)  # every broker of `stack up --brokers N`
                for broker in state.brokers if broker.pid]
    metered.append(Metered("bench", "bench", os.getpid()))
    return [m for m in metered if Path(f"/proc/{m.pid}").exists()]


def per_tx(processes: list[Metered], before: dict[int, float], after: dict[int, float], transactions: int
           ) -> dict[str, Any]:
    """CPU µs per transaction of each process between two readings (pid → CPU s), and per component: the
    flat ``<kind>_cpu_us_per_tx`` sums that ``bench e2e`` always reported, plus one row per Redis node
    (``redis_nodes``) and per broker (``kafka_brokers``)."""
    if transactions <= 0:
        return {}

    def us(m: Metered) -> float:
        return round((after[m.pid] - before[m.pid]) / transactions * 1e6, 1)

    out: dict[str, Any] = {}
    for kind in KINDS:
        mine = [m for m in processes if m.kind == kind and m.pid in before and m.pid in after]
        if mine:
            out[f"{kind}_cpu_us_per_tx"] = round(sum(us(m) for m in mine), 1)
    for kind, key in (("redis", "redis_nodes"), ("kafka", "kafka_brokers")):
        out[key] = [{"node": m.name, "role": m.role, "cpu_us_per_tx": us(m)} if m.role
                    else {"node": m.name, "cpu_us_per_tx": us(m)}
                    for m in processes if m.kind == kind and m.pid in before and m.pid in after]
    return out


def component_costs(cpu: dict[str, Any]) -> dict[str, Any]:
    """A phase's ``cpu`` (``per_tx``) as the capacity model reads it: worker, each Redis node and their
    total, each broker and their total (CPU µs per transaction)."""
    if not cpu:
        return {}
    nodes = cpu.get("redis_nodes") or []
    brokers = cpu.get("kafka_brokers") or []
    primaries = [n["cpu_us_per_tx"] for n in nodes if n.get("role", "primary") == "primary"]
    return {
        "worker": cpu.get("worker_cpu_us_per_tx"),
        "redis_nodes": [n["cpu_us_per_tx"] for n in nodes],
        "redis_primaries": len(primaries),
        "redis_total": cpu.get("redis_cpu_us_per_tx"),
        "redis_busiest_primary": max(primaries, default=None),
        "kafka_brokers": [b["cpu_us_per_tx"] for b in brokers],
        "kafka_total": cpu.get("kafka_cpu_us_per_tx"),
        "bench": cpu.get("bench_cpu_us_per_tx"),
    }


def purge_cluster_prefix(home: Path, prefix: str) -> int:
    """Delete every key under ``prefix:`` on every primary of the stack's Redis Cluster: each node is
    scanned for its own keys and they are unlinked there one by one (a multi-key DEL across slots is
    refused by a cluster node; ``stack.redis.purge_prefix`` is the single node's)."""
    deleted = 0
    for node in cluster_nodes(LocalStack(home).cluster.load()):
        if node.role != "primary":
            continue
        client = RedisConnection(url=f"redis://{node.name}").sync_client()
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
            for i in range(0, len(keys), 5000):
                pipe = client.pipeline(transaction=False)
                for key in keys[i : i + 5000]:
                    pipe.unlink(key)
                deleted += sum(int(n) for n in pipe.execute())
        finally:
            client.close()
    return deleted


def redis_shape(home: Path) -> int:
    """How many primaries the stack under ``home`` runs Redis with: 1 for a single ``redis-server``, N for a
    Redis Cluster of N primaries."""
    stack = LocalStack(home)
    if not stack.load().redis_cluster:
        return 1
    return stack.cluster.load().primaries
