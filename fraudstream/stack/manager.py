"""``fraudstream stack up|down|status``: the local Kafka + Redis that the worker, demo and tests use.

State (pids, ports) lives in ``<home>/stack.json``; connection settings in ``<home>/stack.env``, which every
fraudstream command reads. Logs go to ``<home>/logs/``.

Kafka is one broker by default (data in ``<home>/kafka/data``, log ``kafka.log``) or, with ``brokers=3``,
three combined broker+controller nodes forming one KRaft quorum (``<home>/kafka/broker-<id>/``,
``kafka-<id>.log``); their topics get three replicas and ``min.insync.replicas=2``.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from config.kafka import KafkaConnection
from config.settings import Topics
from fraudstream.stack import kafka, process
from fraudstream.stack import redis as redis_service
from fraudstream.stack.errors import StackError
from fraudstream.stack.redis_cluster import LocalRedisCluster


@dataclass
class ServiceState:
    pid: int | None = None
    port: int | None = None
    controller_port: int | None = None


@dataclass
class StackState:
    brokers: list[ServiceState] = field(default_factory=lambda: [ServiceState()])
    """Kafka's nodes, node id 1 first (one unless ``stack up --brokers N``)."""
    redis: ServiceState = field(default_factory=ServiceState)
    redis_cluster: bool = False
    """``redis`` is then the cluster's first node (its URL seeds the cluster client; the pid tells it runs)."""

    @property
    def kafka(self) -> ServiceState:
        """The first broker (node id 1): the only one of a single-node stack."""
        return self.brokers[0]

    @property
    def bootstrap(self) -> str:
        """Every broker, comma-separated (a client needs any one of them to find the others)."""
        return ",".join(f"127.0.0.1:{b.port}" for b in self.brokers)

    @property
    def kafka_pids(self) -> list[int]:
        return [b.pid for b in self.brokers if b.pid]

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"


def replication_for(brokers: int) -> tuple[int, int | None]:
    """(replication factor, min.insync.replicas) of a local cluster of ``brokers``: one broker, one replica
    (the broker's default min.insync); three or more, three replicas of which two must have an ``acks=all``
    write, so one broker can be lost without losing an acknowledged record or stopping writes."""
    return (1, None) if brokers == 1 else (3, 2)


def topic_partitions(topics: Topics, transactions_partitions: int) -> dict[str, int]:
    keyed = {topics.transactions, topics.scored, topics.labels}
    return {name: (transactions_partitions if name in keyed else 1) for name in topics.model_dump().values()}


class LocalStack:
    """``kafka_listeners``, ``kafka_properties``, ``scram_users``: more broker listeners beside the stack's own
    PLAINTEXT one (TLS and SASL_SSL ones from stack/tls.py, one advertised at a fault proxy's port); single
    broker only. ``brokers``: 1 (default) or 3 and more KRaft nodes."""

    def __init__(self, home: Path, *, jar_cache: Path | None = None, topics: Topics | None = None,
                 transactions_partitions: int = 4, kafka_listeners: Sequence[kafka.Listener] = (),
                 kafka_properties: Sequence[str] = (), scram_users: dict[str, str] | None = None,
                 redis_cluster: int = 0, redis_replicas: int = 0, brokers: int = 1) -> None:
        if brokers < 1 or brokers == 2:
            # two voters: losing either stops the controller quorum, so two brokers survive no more than one
            msg = f"Kafka needs 1 broker or at least 3 (a quorum that survives one loss), got {brokers}"
            raise StackError(msg)
        if brokers > 1 and (kafka_listeners or scram_users):
            msg = "extra listeners and SCRAM users are supported on a single broker only"
            raise StackError(msg)
        self.brokers = brokers
        self.kafka_listeners = tuple(kafka_listeners)
        self.kafka_properties = tuple(kafka_properties)
        self.scram_users = scram_users
        self.home = home.resolve()
        self.jar_cache = jar_cache or kafka.default_jar_cache()
        self.topics = topics or Topics()
        self.transactions_partitions = transactions_partitions
        self.state_file = self.home / "stack.json"
        self.env_file = self.home / "stack.env"
        self.logs = self.home / "logs"
        # 0: one redis-server (the default); N >= 3: a Redis Cluster of N primaries, each with redis_replicas
        self.redis_cluster = redis_cluster
        self.redis_replicas = redis_replicas
        self.cluster = LocalRedisCluster(self.home / "redis-cluster", self.logs)
        # three JVMs on a small machine: a smaller heap each (a broker of this stack holds little data)
        self.kafka_heap = "512m" if brokers == 1 else "256m"

    # --- state -------------------------------------------------------------------------------------
    def load(self) -> StackState:
        if not self.state_file.exists():
            return StackState()
        raw = json.loads(self.state_file.read_text())
        brokers = raw["brokers"] if "brokers" in raw else [raw["kafka"]]  # a state file from before --brokers
        return StackState(brokers=[ServiceState(**b) for b in brokers], redis=ServiceState(**raw["redis"]),
                          redis_cluster=bool(raw.get("redis_cluster", False)))

    def _save(self, state: StackState) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(asdict(state), indent=2) + "\n")
        lines = [f"FRAUD_KAFKA_BOOTSTRAP={state.bootstrap}", f"FRAUD_REDIS_URL={state.redis_url}"]
        if state.redis_cluster:
            lines.append("FRAUD_REDIS_CLUSTER=true")
        replicas, min_isr = replication_for(len(state.brokers))
        if min_isr is not None:  # several brokers: every command creates its topics replicated
            lines += [f"FRAUD_KAFKA_REPLICATION_FACTOR={replicas}", f"FRAUD_KAFKA_MIN_INSYNC_REPLICAS={min_isr}"]
        self.env_file.write_text("\n".join(lines) + "\n")

    def connection(self, state: StackState) -> KafkaConnection:
        """A plaintext connection to the stack's brokers that creates topics replicated as the stack's size says."""
        replicas, min_isr = replication_for(len(state.brokers))
        return KafkaConnection(state.bootstrap, replication_factor=replicas, min_insync_replicas=min_isr)

    # --- lifecycle ---------------------------------------------------------------------------------
    def ensure_up(self, announce: str) -> bool:
        """Start the stack unless both services are already healthy (printing ``announce`` first); True when
        this call started it, so the caller knows to stop it again."""
        if all(s["healthy"] for s in self.status().values()):
            return False
        print(announce, file=sys.stderr)
        self.up()
        return True

    def up(self, *, timeout_s: float = 90.0) -> StackState:
        """Start what is not running, health-check both, create the topics, write stack.env."""
        state = self.load()
        try:
            if self.redis_cluster:
                self._up_redis_cluster(state, timeout_s)
            else:
                self._up_redis(state, timeout_s)
            self._save(state)  # saved per service, so a failed start can still stop what did start
            self._up_kafka(state, timeout_s)
            self._save(state)
            created = kafka.ensure_topics(self.connection(state),
                                          topic_partitions(self.topics, self.transactions_partitions))
        except BaseException:
            self.down()
            raise
        if created:
            print(f"created topics: {', '.join(sorted(created))}", file=sys.stderr)
        return state

    def _up_redis_cluster(self, state: StackState, timeout_s: float) -> None:
        if not state.redis_cluster:
            process.stop(state.redis.pid, timeout_s=10)  # a single node left from an earlier `up`
        cluster = self.cluster.up(self.redis_cluster, self.redis_replicas, timeout_s=timeout_s)
        state.redis_cluster = True
        state.redis = ServiceState(pid=cluster.nodes[0].pid, port=cluster.nodes[0].port)

    def _up_redis(self, state: StackState, timeout_s: float, *, keep_ports: bool = False) -> None:
        if state.redis_cluster:  # a cluster left from an earlier `up --redis-cluster`
            self.cluster.down()
            state.redis_cluster = False
            state.redis = ServiceState()
        svc = state.redis
        if process.is_alive(svc.pid) and svc.port and redis_service.healthy(state.redis_url):
            return
        if not svc.port or (not keep_ports and not process.port_is_free(svc.port)):
            svc.port = process.free_port()
        argv = redis_service.redis_command(svc.port, self.home / "redis", self.logs / "redis.log")
        svc.pid = process.spawn(argv, log_path=self.logs / "redis.stdout.log")
        print(f"redis-server starting on 127.0.0.1:{svc.port} (pid {svc.pid})", file=sys.stderr)
        pid = svc.pid
        redis_service.wait_healthy(state.redis_url, timeout_s=timeout_s, alive=lambda: process.is_alive(pid))

    def _broker_dir(self, node_id: int) -> Path:
        # one broker keeps the layout it always had; several get a directory each
        return self.home / "kafka" if self.brokers == 1 else self.home / "kafka" / f"broker-{node_id}"

    def _broker_log(self, node_id: int) -> Path:
        return self.logs / ("kafka.log" if self.brokers == 1 else f"kafka-{node_id}.log")

    def _layout(self, state: StackState, node_id: int) -> kafka.KafkaLayout:
        svc = state.brokers[node_id - 1]
        assert svc.port is not None and svc.controller_port is not None
        replicas, min_isr = replication_for(self.brokers)
        return kafka.KafkaLayout(
            data_dir=self._broker_dir(node_id) / "data", config_file=self._broker_dir(node_id) / "server.properties",
            log_file=self._broker_log(node_id), port=svc.port, controller_port=svc.controller_port,
            listeners=self.kafka_listeners, properties=self.kafka_properties, node_id=node_id,
            voters=kafka.quorum_voters([b.controller_port or 0 for b in state.brokers]),
            replication_factor=replicas, min_insync_replicas=min_isr or 1,
        )

    def _kafka_healthy(self, state: StackState) -> bool:
        return (len(state.brokers) == self.brokers and all(process.is_alive(b.pid) and b.port for b in state.brokers)
                and all(kafka.healthy(f"127.0.0.1:{b.port}") for b in state.brokers))

    def _up_kafka(self, state: StackState, timeout_s: float, *, keep_ports: bool = False) -> None:
        if self._kafka_healthy(state):
            return
        libs = kafka.ensure_jars(self.jar_cache)
        if len(state.brokers) != self.brokers:
            # another shape than last time: its nodes go, and a multi-node cluster's data with them (a KRaft
            # quorum of other voters cannot be joined); a single broker's data stays where it always was
            process.stop_all([b.pid for b in state.brokers], timeout_s=30)
            shutil.rmtree(self.home / "kafka" / "broker-1", ignore_errors=True)
            for node_id in range(2, max(len(state.brokers), self.brokers) + 1):
                shutil.rmtree(self.home / "kafka" / f"broker-{node_id}", ignore_errors=True)
            state.brokers = [ServiceState() for _ in range(self.brokers)]
        ports_moved = False
        for broker in state.brokers:
            for attr in ("port", "controller_port"):
                port = getattr(broker, attr)
                if not port or (not keep_ports and not process.is_alive(broker.pid) and not process.port_is_free(port)):
                    setattr(broker, attr, process.free_port())
                    ports_moved = ports_moved or bool(port)
        if ports_moved and self.brokers > 1:
            # the voters' addresses changed: a quorum formatted with the old ones starts over, empty
            process.stop_all([b.pid for b in state.brokers], timeout_s=30)
            for broker in state.brokers:
                broker.pid = None
            for node_id in range(1, self.brokers + 1):
                shutil.rmtree(self._broker_dir(node_id), ignore_errors=True)
        cluster_id = kafka.new_cluster_id()  # used only by nodes formatted now, all of them at once
        layouts = [self._layout(state, node_id) for node_id, broker in enumerate(state.brokers, start=1)
                   if not process.is_alive(broker.pid)]
        for layout in layouts:
            kafka.write_config(layout, default_partitions=self.transactions_partitions)
        # the storage tool is a JVM start each (5-10 s here): the nodes are formatted side by side
        with ThreadPoolExecutor(max_workers=len(layouts) or 1) as pool:
            list(pool.map(lambda layout: kafka.format_storage(libs, layout, scram_users=self.scram_users,
                                                              cluster_id=cluster_id), layouts))
        for node_id in range(1, self.brokers + 1):
            if not process.is_alive(state.brokers[node_id - 1].pid):
                self._spawn_broker(state, node_id)
        for node_id, broker in enumerate(state.brokers, start=1):
            kafka.wait_healthy(f"127.0.0.1:{broker.port}", timeout_s=timeout_s,
                               alive=functools.partial(process.is_alive, broker.pid),
                               log_path=self._layout(state, node_id).log_file)
        if self.brokers > 1:
            kafka.wait_brokers_registered(state.bootstrap, self.brokers, timeout_s=timeout_s)

    def _spawn_broker(self, state: StackState, node_id: int) -> None:
        broker = state.brokers[node_id - 1]
        layout = self._layout(state, node_id)
        argv = kafka.java_command(kafka.ensure_jars(self.jar_cache), "kafka.Kafka", str(layout.config_file),
                                  heap=self.kafka_heap)
        broker.pid = process.spawn(argv, log_path=layout.log_file)
        self._save(state)
        node = "" if self.brokers == 1 else f" node {node_id}/{self.brokers}"
        print(f"Kafka {kafka.KAFKA_VERSION} (KRaft){node} starting on 127.0.0.1:{broker.port} (pid {broker.pid})",
              file=sys.stderr)

    def down(self) -> list[str]:
        """Stop both services (Kafka first, so it can flush); returns what was stopped."""
        state = self.load()
        stopped = []
        several = len(state.brokers) > 1
        ran = process.stop_all([b.pid for b in state.brokers], timeout_s=30)
        stopped += [f"kafka{f'-{node_id}' if several else ''} (pid {b.pid})"
                    for node_id, b in enumerate(state.brokers, start=1) if b.pid in ran]
        if state.redis_cluster:
            stopped += self.cluster.down()
        elif process.stop(state.redis.pid, timeout_s=10):
            stopped.append(f"redis (pid {state.redis.pid})")
        for broker in state.brokers:
            broker.pid = None
        state.redis.pid = None
        if self.state_file.exists():
            self.state_file.write_text(json.dumps(asdict(state), indent=2) + "\n")
        self.env_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> dict[str, dict[str, object]]:
        state = self.load()
        return {
            "kafka": self._kafka_status(state),
            "redis": self.cluster.status() if state.redis_cluster else {
                "pid": state.redis.pid, "url": state.redis_url if state.redis.port else None,
                "running": process.is_alive(state.redis.pid),
                "healthy": bool(state.redis.port) and redis_service.healthy(state.redis_url),
                "log": str(self.logs / "redis.log"),
            },
        }

    def _kafka_status(self, state: StackState) -> dict[str, object]:
        if len(state.brokers) == 1:
            return {
                "pid": state.kafka.pid, "bootstrap": state.bootstrap if state.kafka.port else None,
                "running": process.is_alive(state.kafka.pid),
                "healthy": bool(state.kafka.port) and process.is_alive(state.kafka.pid)
                and kafka.healthy(state.bootstrap),
                "log": str(self.logs / "kafka.log"),
            }
        nodes = [{"node_id": node_id, "pid": b.pid, "port": b.port, "running": process.is_alive(b.pid),
                  "healthy": bool(b.port) and process.is_alive(b.pid) and kafka.healthy(f"127.0.0.1:{b.port}")}
                 for node_id, b in enumerate(state.brokers, start=1)]
        return {
            "pid": [b.pid for b in state.brokers], "bootstrap": state.bootstrap if state.kafka.port else None,
            "brokers": nodes, "running": all(n["running"] for n in nodes), "healthy": all(n["healthy"] for n in nodes),
            "log": str(self.logs / "kafka-*.log"),
        }

    def kill_broker(self, node_id: int) -> int:
        """SIGKILL one broker (a crash: no controlled shutdown, no leadership handed over); it stays down until
        ``start_broker``. Returns the pid it had."""
        state = self.load()
        broker = state.brokers[node_id - 1]
        pid = broker.pid
        if not process.is_alive(pid):
            msg = f"Kafka node {node_id} is not running"
            raise StackError(msg)
        assert pid is not None
        process.kill(pid)
        broker.pid = None
        self._save(state)
        return pid

    def start_broker(self, node_id: int, *, timeout_s: float = 120.0) -> StackState:
        """Start one stopped broker again on its ports and log directory (it rejoins the quorum and catches up)."""
        state = self.load()
        if not process.is_alive(state.brokers[node_id - 1].pid):
            self._spawn_broker(state, node_id)
        broker = state.brokers[node_id - 1]
        pid = broker.pid
        kafka.wait_healthy(f"127.0.0.1:{broker.port}", timeout_s=timeout_s, alive=lambda: process.is_alive(pid),
                           log_path=self._layout(state, node_id).log_file)
        return state

    def restart_redis(self) -> StackState:
        """Stop and start Redis on the same port and data (fault tests: a Redis restart)."""
        state = self.load()
        process.stop(state.redis.pid, timeout_s=10)
        self._up_redis(state, 30, keep_ports=True)
        self._save(state)
        return state

    def restart_kafka(self) -> StackState:
        """Stop and start every broker on the same ports and data (fault tests: a broker restart)."""
        state = self.load()
        process.stop_all([b.pid for b in state.brokers], timeout_s=30)
        self._up_kafka(state, 90, keep_ports=True)
        self._save(state)
        return state


def require_running(stack: LocalStack) -> StackState:
    state = stack.load()
    if not (process.is_alive(state.kafka.pid) and process.is_alive(state.redis.pid)):
        msg = "the local stack is not running: start it with 'fraudstream stack up'"
        raise StackError(msg)
    return state
