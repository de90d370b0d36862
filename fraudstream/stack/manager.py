"""``fraudstream stack up|down|status``: the local Kafka + Redis that the worker, demo and tests use.

State (pids, ports) lives in ``<home>/stack.json``; connection settings in ``<home>/stack.env``, which every
fraudstream command reads. Logs go to ``<home>/logs/``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
    kafka: ServiceState = field(default_factory=ServiceState)
    redis: ServiceState = field(default_factory=ServiceState)
    redis_cluster: bool = False
    """``redis`` is then the cluster's first node (its URL seeds the cluster client; the pid tells it runs)."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"


def topic_partitions(topics: Topics, transactions_partitions: int) -> dict[str, int]:
    keyed = {topics.transactions, topics.scored, topics.labels}
    return {name: (transactions_partitions if name in keyed else 1) for name in topics.model_dump().values()}


class LocalStack:
    """``kafka_listeners``, ``kafka_properties``, ``scram_users``: more broker listeners beside the stack's own
    PLAINTEXT one (TLS and SASL_SSL ones from stack/tls.py, one advertised at a fault proxy's port)."""

    def __init__(self, home: Path, *, jar_cache: Path | None = None, topics: Topics | None = None,
                 transactions_partitions: int = 4, kafka_listeners: Sequence[kafka.Listener] = (),
                 kafka_properties: Sequence[str] = (), scram_users: dict[str, str] | None = None,
                 redis_cluster: int = 0, redis_replicas: int = 0) -> None:
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

    # --- state -------------------------------------------------------------------------------------
    def load(self) -> StackState:
        if not self.state_file.exists():
            return StackState()
        raw = json.loads(self.state_file.read_text())
        return StackState(kafka=ServiceState(**raw["kafka"]), redis=ServiceState(**raw["redis"]),
                          redis_cluster=bool(raw.get("redis_cluster", False)))

    def _save(self, state: StackState) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(asdict(state), indent=2) + "\n")
        cluster = "FRAUD_REDIS_CLUSTER=true\n" if state.redis_cluster else ""
        self.env_file.write_text(
            f"FRAUD_KAFKA_BOOTSTRAP={state.bootstrap}\nFRAUD_REDIS_URL={state.redis_url}\n{cluster}"
        )

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
            created = kafka.ensure_topics(state.bootstrap, topic_partitions(self.topics, self.transactions_partitions))
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

    def _up_kafka(self, state: StackState, timeout_s: float, *, keep_ports: bool = False) -> None:
        svc = state.kafka
        if process.is_alive(svc.pid) and svc.port and kafka.healthy(state.bootstrap):
            return
        libs = kafka.ensure_jars(self.jar_cache)
        for attr in ("port", "controller_port"):
            port = getattr(svc, attr)
            if not port or (not keep_ports and not process.port_is_free(port)):
                setattr(svc, attr, process.free_port())
        assert svc.port is not None and svc.controller_port is not None
        layout = kafka.KafkaLayout(
            data_dir=self.home / "kafka" / "data", config_file=self.home / "kafka" / "server.properties",
            log_file=self.logs / "kafka.log", port=svc.port, controller_port=svc.controller_port,
            listeners=self.kafka_listeners, properties=self.kafka_properties,
        )
        kafka.write_config(layout, default_partitions=self.transactions_partitions)
        kafka.format_storage(libs, layout, scram_users=self.scram_users)
        svc.pid = process.spawn(kafka.java_command(libs, "kafka.Kafka", str(layout.config_file)),
                                log_path=layout.log_file)
        self._save(state)
        print(f"Kafka {kafka.KAFKA_VERSION} (KRaft) starting on {state.bootstrap} (pid {svc.pid})", file=sys.stderr)
        pid = svc.pid
        kafka.wait_healthy(state.bootstrap, timeout_s=timeout_s, alive=lambda: process.is_alive(pid))

    def down(self) -> list[str]:
        """Stop both services (Kafka first, so it can flush); returns what was stopped."""
        state = self.load()
        stopped = []
        if process.stop(state.kafka.pid, timeout_s=30):
            stopped.append(f"kafka (pid {state.kafka.pid})")
        if state.redis_cluster:
            stopped += self.cluster.down()
        elif process.stop(state.redis.pid, timeout_s=10):
            stopped.append(f"redis (pid {state.redis.pid})")
        state.kafka.pid = None
        state.redis.pid = None
        if self.state_file.exists():
            self.state_file.write_text(json.dumps(asdict(state), indent=2) + "\n")
        self.env_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> dict[str, dict[str, object]]:
        state = self.load()
        return {
            "kafka": {
                "pid": state.kafka.pid, "bootstrap": state.bootstrap if state.kafka.port else None,
                "running": process.is_alive(state.kafka.pid),
                "healthy": bool(state.kafka.port) and process.is_alive(state.kafka.pid)
                and kafka.healthy(state.bootstrap),
                "log": str(self.logs / "kafka.log"),
            },
            "redis": self.cluster.status() if state.redis_cluster else {
                "pid": state.redis.pid, "url": state.redis_url if state.redis.port else None,
                "running": process.is_alive(state.redis.pid),
                "healthy": bool(state.redis.port) and redis_service.healthy(state.redis_url),
                "log": str(self.logs / "redis.log"),
            },
        }

    def restart_redis(self) -> StackState:
        """Stop and start Redis on the same port and data (fault tests: a Redis restart)."""
        state = self.load()
        process.stop(state.redis.pid, timeout_s=10)
        self._up_redis(state, 30, keep_ports=True)
        self._save(state)
        return state

    def restart_kafka(self) -> StackState:
        state = self.load()
        process.stop(state.kafka.pid, timeout_s=30)
        self._up_kafka(state, 90, keep_ports=True)
        self._save(state)
        return state


def require_running(stack: LocalStack) -> StackState:
    state = stack.load()
    if not (process.is_alive(state.kafka.pid) and process.is_alive(state.redis.pid)):
        msg = "the local stack is not running: start it with 'fraudstream stack up'"
        raise StackError(msg)
    return state
