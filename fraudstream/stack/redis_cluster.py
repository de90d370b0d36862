"""A local Redis Cluster: N cluster-mode ``redis-server`` primaries (+ R replicas each) on free loopback
ports, joined by ``redis-cli --cluster create`` (Debian's redis-tools), health-checked until every node
reports ``cluster_state:ok`` and knows every other node.

State (pids, ports) lives in ``<dir>/cluster.json``; each node's data and ``nodes.conf`` in ``<dir>/<port>/``.
A cluster is always created fresh: ``up`` on a directory whose nodes are all alive and healthy does nothing,
otherwise what is left is stopped and its data removed (a half-created cluster cannot be joined again).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

from config.redis import RedisConnection
from fraudstream.stack import process
from fraudstream.stack.errors import StackError
from fraudstream.stack.redis import redis_command

NODE_TIMEOUT_MS = 2000
"""``cluster-node-timeout``: a primary unreachable this long is failed over to its replica. Redis's default
(15 s) would make a failover test wait a quarter of a minute; 2 s is still far above loopback latency."""


@dataclass
class ClusterNode:
    port: int
    pid: int | None = None


@dataclass
class ClusterState:
    nodes: list[ClusterNode] = field(default_factory=list)
    replicas: int = 0

    @property
    def url(self) -> str:
        """One node's URL: redis-py's ``RedisCluster`` discovers the others from it (``FRAUD_REDIS_URL``)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}" if self.nodes else ""

    @property
    def primaries(self) -> int:
        return len(self.nodes) // (1 + self.replicas) if self.nodes else 0


BUS_PORT_OFFSET = 10_000
"""A cluster node also listens on its port + 10000 (the cluster bus)."""


def free_node_port(taken: set[int]) -> int:
    """A free loopback port whose bus port (+10000) is free and valid too; the OS's ephemeral picks are
    often above 55535, where the bus port would not exist."""
    # Both ports below the ephemeral range where it leaves room (see ``process.free_port``).
    ceiling = process.ephemeral_port_floor() - 1
    if ceiling - BUS_PORT_OFFSET <= process.LISTEN_PORT_MIN:
        ceiling = 65_535
    for _ in range(200):
        port = random.randint(process.LISTEN_PORT_MIN, ceiling - BUS_PORT_OFFSET)
        if {port, port + BUS_PORT_OFFSET} & taken:
            continue
        if process.port_is_free(port) and process.port_is_free(port + BUS_PORT_OFFSET):
            taken.update({port, port + BUS_PORT_OFFSET})
            return port
    msg = "found no free port pair (port, port + 10000) for a Redis Cluster node"
    raise StackError(msg)


def redis_cli_binary() -> str:
    binary = shutil.which("redis-cli")
    if binary is None:
        msg = "redis-cli is not installed. As root: apt-get install -y redis-tools; then try again."
        raise StackError(msg)
    return binary


def node_command(port: int, data_dir: Path, log_file: Path, *, appendonly: bool = True) -> list[str]:
    return [
        *redis_command(port, data_dir, log_file, appendonly=appendonly),
        "--cluster-enabled", "yes", "--cluster-config-file", str(data_dir / "nodes.conf"),
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
    ]


def _node(port: int) -> redis.Redis:
    """A client of one local node (no credentials: the stack's nodes have none), through config/redis.py."""
    return RedisConnection(url=f"redis://127.0.0.1:{port}").sync_client(socket_connect_timeout=1, socket_timeout=1)


def cluster_info(port: int) -> dict[str, str]:
    client = _node(port)
    try:
        raw = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
    except redis.RedisError:
        return {}
    finally:
        client.close()
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.strip().splitlines() if ":" in line)


def cluster_healthy(ports: list[int]) -> bool:
    """Every node answers, reports ``cluster_state:ok`` and knows all the others."""
    if not ports:
        return False
    for port in ports:
        info = cluster_info(port)
        if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", "0")) != len(ports):
            return False
    return True


def node_id(port: int) -> str:
    """The cluster node id of the node on ``port`` (``CLUSTER MYID``)."""
    client = _node(port)
    try:
        raw = client.execute_command("CLUSTER", "MYID")  # type: ignore[no-untyped-call]
    finally:
        client.close()
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def replicas_in_slots(port: int) -> int:
    """Replicas listed beside their primaries in ``CLUSTER SLOTS`` (what a cluster client discovers); a
    replica joins by gossip after ``--cluster create`` returns, so this lags ``cluster_state:ok``."""
    client = _node(port)
    try:
        slots = client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
    except redis.RedisError:
        return 0
    finally:
        client.close()
    return sum(max(0, len(entry) - 3) for entry in slots or [])


def wait_replicas_listed(port: int, expected: int, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while replicas_in_slots(port) < expected:
        if time.monotonic() > deadline:
            msg = f"the Redis Cluster lists fewer than {expected} replicas after {timeout_s:.0f}s"
            raise StackError(msg)
        time.sleep(0.2)


def wait_cluster_healthy(ports: list[int], *, timeout_s: float, alive: Callable[[], bool] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cluster_healthy(ports):
            return
        if alive is not None and not alive():
            msg = "a cluster redis-server exited during start-up; see the logs under .fraudstream/logs/"
            raise StackError(msg)
        time.sleep(0.2)
    msg = f"the Redis Cluster on ports {ports} did not reach cluster_state:ok within {timeout_s:.0f}s"
    raise StackError(msg)


def wait_node_answers(port: int, *, timeout_s: float, pid: int) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        client = _node(port)
        try:
            if client.ping():
                return
        except redis.RedisError:
            pass
        finally:
            client.close()
        if not process.is_alive(pid):
            msg = f"redis-server on port {port} exited during start-up; see its log"
            raise StackError(msg)
        time.sleep(0.1)
    msg = f"redis-server on port {port} did not answer PING within {timeout_s:.0f}s"
    raise StackError(msg)


class LocalRedisCluster:
    """The cluster under ``directory``; logs under ``logs``."""

    def __init__(self, directory: Path, logs: Path, *, appendonly: bool = True) -> None:
        self.directory = directory
        self.logs = logs
        self.appendonly = appendonly
        self.state_file = directory / "cluster.json"

    def load(self) -> ClusterState:
        if not self.state_file.exists():
            return ClusterState()
        raw = json.loads(self.state_file.read_text())
        return ClusterState(nodes=[ClusterNode(**n) for n in raw["nodes"]], replicas=int(raw["replicas"]))

    def _save(self, state: ClusterState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(asdict(state), indent=2) + "\n")

    def healthy(self, state: ClusterState | None = None) -> bool:
        state = state or self.load()
        return all(process.is_alive(n.pid) for n in state.nodes) and cluster_healthy([n.port for n in state.nodes])

    def up(self, primaries: int, replicas: int = 0, *, timeout_s: float = 60.0) -> ClusterState:
        """Start ``primaries * (1 + replicas)`` nodes, create the cluster, wait until it is healthy."""
        if primaries < 3:
            msg = f"a Redis Cluster needs at least 3 primaries, got {primaries}"
            raise StackError(msg)
        if replicas < 0:
            msg = f"replicas must be >= 0, got {replicas}"
            raise StackError(msg)
        state = self.load()
        if state.nodes and state.primaries == primaries and state.replicas == replicas and self.healthy(state):
            return state
        self.down()
        shutil.rmtree(self.directory, ignore_errors=True)  # nodes.conf of an old cluster would rejoin it
        state = ClusterState(replicas=replicas)
        try:
            taken: set[int] = set()
            for _ in range(primaries * (1 + replicas)):
                port = free_node_port(taken)
                node = ClusterNode(port=port)
                state.nodes.append(node)
                node.pid = process.spawn(
                    node_command(port, self.directory / str(port), self.logs / f"redis-cluster-{port}.log",
                                 appendonly=self.appendonly),
                    log_path=self.logs / f"redis-cluster-{port}.stdout.log",
                )
                self._save(state)  # per node, so a failed start can still stop what did start
            for node in state.nodes:
                assert node.pid is not None
                wait_node_answers(node.port, timeout_s=timeout_s, pid=node.pid)
            self._create(state, timeout_s)
            wait_cluster_healthy([n.port for n in state.nodes], timeout_s=timeout_s,
                                 alive=lambda: all(process.is_alive(n.pid) for n in state.nodes))
            # up means a client sees the whole topology, replicas included (they attach just after)
            wait_replicas_listed(state.nodes[0].port, primaries * replicas, timeout_s=timeout_s)
        except BaseException:
            self.down()
            raise
        print(
            f"Redis Cluster up: {primaries} primaries, {replicas} replica(s) each, ports "
            f"{','.join(str(n.port) for n in state.nodes)}",
            file=sys.stderr,
        )
        return state

    def _create(self, state: ClusterState, timeout_s: float) -> None:
        # redis-cli makes the first `primaries` addresses the primaries and assigns the rest as replicas
        argv = [redis_cli_binary(), "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in state.nodes),
                "--cluster-replicas", str(state.replicas), "--cluster-yes"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            msg = f"redis-cli --cluster create did not finish within {timeout_s:.0f}s"
            raise StackError(msg) from exc
        (self.logs / "redis-cluster-create.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            msg = f"redis-cli --cluster create failed (exit {done.returncode}): {' | '.join(tail)}"
            raise StackError(msg)

    def down(self) -> list[str]:
        state = self.load()
        stopped = [f"redis-cluster:{n.port} (pid {n.pid})" for n in state.nodes if process.stop(n.pid, timeout_s=10)]
        for node in state.nodes:
            node.pid = None
        if self.state_file.exists():
            self._save(state)
        return stopped

    def kill_node(self, port: int) -> None:
        """SIGKILL one node (a crash, for failover tests); it stays down."""
        state = self.load()
        for node in state.nodes:
            if node.port == port and node.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.pid, signal.SIGKILL)  # no SIGTERM: a graceful shutdown is not a crash
                process.stop(node.pid, timeout_s=5)  # reaps it
                node.pid = None
        self._save(state)

    def start_node(self, port: int, *, timeout_s: float = 30.0) -> None:
        """Start a stopped node again on its port and data directory: with its ``nodes.conf`` it rejoins the
        cluster (a primary that was failed over comes back as a replica of the promoted one)."""
        state = self.load()
        node = next((n for n in state.nodes if n.port == port), None)
        if node is None:
            msg = f"no node on port {port} in this cluster"
            raise StackError(msg)
        if process.is_alive(node.pid):
            return
        node.pid = process.spawn(
            node_command(port, self.directory / str(port), self.logs / f"redis-cluster-{port}.log",
                         appendonly=self.appendonly),
            log_path=self.logs / f"redis-cluster-{port}.stdout.log",
        )
        self._save(state)
        wait_node_answers(port, timeout_s=timeout_s, pid=node.pid)

    def reshard(self, source_port: int, target_port: int, slots: int, *, timeout_s: float = 300.0) -> str:
        """Move ``slots`` slots (the source's lowest first) and their keys from one primary to another with
        ``redis-cli --cluster reshard``, while clients keep writing (MOVED / ASK); returns redis-cli's output."""
        source, target = node_id(source_port), node_id(target_port)
        argv = [redis_cli_binary(), "--cluster", "reshard", f"127.0.0.1:{source_port}", "--cluster-from", source,
                "--cluster-to", target, "--cluster-slots", str(slots), "--cluster-yes"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            msg = f"redis-cli --cluster reshard did not finish within {timeout_s:.0f}s"
            raise StackError(msg) from exc
        (self.logs / "redis-cluster-reshard.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0 or "[ERR]" in done.stdout:
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            msg = f"redis-cli --cluster reshard failed (exit {done.returncode}): {' | '.join(tail)}"
            raise StackError(msg)
        return done.stdout

    def status(self) -> dict[str, object]:
        state = self.load()
        return {
            "pid": [n.pid for n in state.nodes], "url": state.url or None, "primaries": state.primaries,
            "replicas": state.replicas,
            "running": bool(state.nodes) and all(process.is_alive(n.pid) for n in state.nodes),
            "healthy": bool(state.nodes) and self.healthy(state), "log": str(self.logs / "redis-cluster-*.log"),
        }
