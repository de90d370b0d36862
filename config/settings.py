"""The one typed settings object of a fraudstream process.

Read from the environment (prefix ``FRAUD_``) and from ``<home>/stack.env``, which ``fraudstream stack up``
writes. Environment variables win over the file. This is the only module that reads the environment:
everything else receives a ``Settings`` instance.

The fields stay flat, because their names are the ``FRAUD_*`` variables that docker-compose, the Helm chart
and the docs set. They are grouped on top of that as views, one per concern: ``settings.kafka``,
``settings.redis`` and ``settings.model`` are the factories of every Kafka client, Redis client and model
server channel (``config/kafka.py``, ``config/redis.py``, ``config/model.py``), so no other module reads a
password or builds a client; ``settings.worker`` and ``settings.monitoring`` are the worker's batching and
the metrics / drift options. A view is built from the flat fields each time it is asked for (they are
frozen), so there is one source of truth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.kafka import KafkaConnection, KafkaSecurityProtocol, SaslMechanism
from config.model import ModelConnection
from config.redis import RedisConnection

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster


class Topics(BaseModel):
    """Topic names; the defaults are the contract in DESIGN.md."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    transactions: str = "transactions"
    scored: str = "scored-transactions"
    dead_letter: str = "transactions-dlq"
    labels: str = "fraud-labels"
    retrain_requests: str = "retrain-requests"
    retrain_status: str = "retrain-status"
    drift_alerts: str = "drift-alerts"


PipelineMode = Literal["batched", "naive", "strict_per_record", "echo"]


@dataclass(frozen=True)
class WorkerOptions:
    """The worker's part of the settings (``settings.worker``): its group, batching and input limits."""

    app_id: str
    web_port: int
    batch_max_size: int
    batch_max_wait_s: float
    max_batches_in_flight: int
    fetch_min_bytes: int
    fetch_max_wait_ms: int
    max_message_bytes: int
    max_clock_skew_s: float
    pipeline_mode: PipelineMode


@dataclass(frozen=True)
class MonitoringOptions:
    """The metrics endpoint and the drift windows (``settings.monitoring``)."""

    metrics_host: str
    metrics_port: int
    drift_bucket_s: float


def default_home() -> Path:
    return Path(os.environ.get("FRAUD_HOME", ".fraudstream"))


class Settings(BaseSettings):
    """Everything a fraudstream process can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="FRAUD_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    home: Path = Field(default_factory=default_home, description="state, logs, models of this checkout")

    # --- Kafka -------------------------------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    topics: Topics = Topics()
    transactions_partitions: int = Field(default=4, ge=1, le=1024)
    kafka_replication_factor: int = Field(
        default=1, ge=1, le=16,
        description="replicas of the topics fraudstream creates (its own and faust's); `stack up --brokers 3` "
        "sets 3",
    )
    kafka_min_insync_replicas: int | None = Field(
        default=None, ge=1, le=16,
        description="min.insync.replicas of the topics fraudstream creates: an acks=all write is acknowledged "
        "once this many replicas have it; unset: the broker's default; `stack up --brokers 3` sets 2",
    )
    kafka_session_timeout_s: float = Field(
        default=60.0, ge=6.0, le=1800.0, description="consumer-group session: how soon a dead worker's partitions move"
    )

    # --- Redis -------------------------------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_username: str | None = None
    redis_cluster: bool = Field(
        default=False,
        description="redis_url is one node of a Redis Cluster (`stack up --redis-cluster N` sets it): the client "
        "discovers the others and routes each call to its slot's primary",
    )
    feature_key_prefix: str = Field(default="fs", pattern=r"^[A-Za-z0-9_.:-]+$", description="Redis key prefix")
    dedup_horizon_s: float = Field(
        default=86_400.0, ge=60.0,
        description="how long a transaction id is held to one content: its id record lives this long (wall "
        "clock) after the id was first seen, and each card/terminal remembers its ids this long in event time "
        "behind its newest transaction; repeats within it get the first result, conflicts are dead-lettered",
    )
    redis_password: SecretStr | None = None
    redis_wait_replicas: int = Field(
        default=0, ge=0, le=16,
        description="0: Redis replicates asynchronously and a failover can lose writes a primary acknowledged "
        "(docs/scaling.md, 'Redis: durability in a failover'). N > 0: every write round trip of a batch ends "
        "with a marker write and WAIT N on the same connection, per primary it touched; the batch's offsets "
        "are committed only after N replicas confirmed its state, and a shortfall is retried (the stream "
        "pauses). Needs N replicas per primary; with exactly N, a shard pauses after a failover until a "
        "replica is back",
    )
    redis_wait_timeout_ms: int = Field(
        default=1000, ge=1, le=4000,
        description="how long one WAIT waits for redis_wait_replicas replicas before the round counts as short "
        "and is retried; below the Redis client's 5 s reply timeout (config/redis.py), which would cut it off",
    )

    # --- worker ------------------------------------------------------------------------------------
    app_id: str = "fraudstream-worker"
    worker_web_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    batch_max_size: int = Field(default=256, ge=1, le=100_000)
    batch_max_wait_ms: float = Field(
        default=20.0, gt=0, le=10_000,
        description="how long a batch of labels, or of model calls across callers, may wait to fill; "
        "transactions are batched per fetch instead (kafka_fetch_min_bytes, kafka_fetch_max_wait_ms)",
    )
    max_batches_in_flight: int = Field(
        default=2, ge=1, le=64,
        description="micro-batches being scored and published while the next is applied to Redis; the consumer "
        "pauses when more than this many full batches queue up",
    )
    kafka_fetch_min_bytes: int = Field(
        default=64 * 1024, ge=1,
        description="the broker holds a worker's fetch until this much data is there (or the wait below passed); "
        "1 = answer with the first record, faust's default, which cost ~20% more worker CPU at 2,500 tx/s",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=10, ge=0, le=60_000, description="longest a worker's fetch waits for kafka_fetch_min_bytes",
    )
    scored_stage_timings: bool = Field(
        default=True,
        description="each scored record carries `timings`, where its time went (fetch, batch wait, features, score "
        "wait, model); false leaves the field out, for consumers that validate against a schema exported before "
        "it existed (the worker's /metrics has the per-stage histograms either way)",
    )
    kafka_fetch_hold_min_records: int = Field(
        default=16, ge=0,
        description="the broker holds a fetch (the two settings above) only while records arrive fast enough to "
        "bring this many within kafka_fetch_max_wait_ms; below that rate a fetch is answered with the first record, "
        "so a lone transaction never waits for a batch to fill; 0 = always hold",
    )
    max_message_bytes: int = Field(default=64 * 1024, ge=256)
    max_clock_skew_s: float = Field(default=86_400.0, ge=0, description="how far in the future an event may be")
    pipeline_mode: PipelineMode = Field(
        default="batched",
        description="benchmark baselines (fraudstream/bench/baselines.py): naive = a conventional faust agent, one "
        "Redis trip and model call per record, buffered sends; strict_per_record = the same, each send awaited "
        "until acks=all before the next; echo = no Redis and no model, a pass-through (fraudstream/bench/echo.py)",
    )
    card_hash_secret: SecretStr = SecretStr("fraudstream-dev-secret-change-me")

    # --- model -------------------------------------------------------------------------------------
    model_backend: str = Field(
        default="", description="local:///path/to/repo/fraud_dnn or tfserving://host:8500/fraud_dnn?label=stable"
    )
    model_name: str = "fraud_dnn"
    model_deadline_s: float = Field(default=1.0, gt=0)
    model_outage_grace_s: float = Field(default=30.0, ge=0, description="retry this long, then rules only")
    canary_share: float = Field(default=0.0, ge=0.0, le=1.0)
    shadow: bool = False
    policy_file: Path | None = None
    tfserving_model_base_path: str | None = Field(
        default=None, description="the model repository as TF Serving mounts it (docker-compose: /models)"
    )

    # --- monitoring --------------------------------------------------------------------------------
    metrics_port: int = Field(default=9108, ge=-1, le=65535, description="worker /metrics; 0 = free port, -1 = off")
    drift_bucket_s: float = Field(
        default=10.0, gt=0, le=3600,
        description="resolution of the drift windows, one value for both sides: the workers write their feature "
        "sketches in buckets of this size (it is part of the Redis key) and the monitor reads and windows them",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="address the worker's /metrics binds to: loopback unless configured otherwise (a container "
        "scraped by Prometheus over the network sets 0.0.0.0 and keeps the port on an internal network)",
    )
    api_token: SecretStr | None = None

    @property
    def model_repository(self) -> Path:
        return self.home / "models"

    @property
    def effective_model_backend(self) -> str:
        return self.model_backend or f"local://{(self.model_repository / self.model_name).resolve()}"

    @property
    def stack_env_file(self) -> Path:
        return self.home / "stack.env"

    # --- views: connections (config/kafka.py, config/redis.py, config/model.py) and options ---------------
    @property
    def kafka(self) -> KafkaConnection:
        """The factory of every Kafka client: bootstrap, TLS / SASL, timeouts."""
        return KafkaConnection(
            bootstrap=self.kafka_bootstrap, security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism, sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password, ssl_cafile=self.kafka_ssl_cafile,
            replication_factor=self.kafka_replication_factor, min_insync_replicas=self.kafka_min_insync_replicas,
        )

    @property
    def redis(self) -> RedisConnection:
        """The factory of every Redis client: URL, ACL user and password, timeouts."""
        return RedisConnection(url=self.redis_url, username=self.redis_username, password=self.redis_password,
                               cluster=self.redis_cluster)

    @property
    def model(self) -> ModelConnection:
        """The model: its backend URI (local or TF Serving), deadline, outage grace, and the factory of the
        model server's gRPC channel with its retry policy."""
        return ModelConnection(backend=self.effective_model_backend, deadline_s=self.model_deadline_s,
                               outage_grace_s=self.model_outage_grace_s)

    @property
    def worker(self) -> WorkerOptions:
        return WorkerOptions(
            app_id=self.app_id, web_port=self.worker_web_port, batch_max_size=self.batch_max_size,
            batch_max_wait_s=self.batch_max_wait_ms / 1000.0, max_batches_in_flight=self.max_batches_in_flight,
            fetch_min_bytes=self.kafka_fetch_min_bytes, fetch_max_wait_ms=self.kafka_fetch_max_wait_ms,
            max_message_bytes=self.max_message_bytes, max_clock_skew_s=self.max_clock_skew_s,
            pipeline_mode=self.pipeline_mode,
        )

    @property
    def monitoring(self) -> MonitoringOptions:
        return MonitoringOptions(metrics_host=self.metrics_host, metrics_port=self.metrics_port,
                                 drift_bucket_s=self.drift_bucket_s)

    def card_hash_key(self) -> bytes:
        """The HMAC key card ids are hashed with (``streams.identity.CardHasher``)."""
        return self.card_hash_secret.get_secret_value().encode()


def load_settings(**overrides: Any) -> Settings:
    """Build the settings: explicit overrides > environment > ``<home>/stack.env`` > defaults."""
    home = Path(str(overrides.get("home") or default_home()))
    env_file = home / "stack.env"
    return Settings(_env_file=env_file if env_file.exists() else None, **overrides)  # type: ignore[call-arg]


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments for TLS / SASL (nothing for PLAINTEXT): ``settings.kafka.client_options()``."""
    return settings.kafka.client_options()


def redis_client(settings: Settings) -> aioredis.Redis | RedisCluster:
    """The worker's asyncio Redis client: ``settings.redis.client()``."""
    return settings.redis.client()


def faust_credentials(settings: Settings) -> Any:
    """faust's ``broker_credentials``: ``settings.kafka.faust_credentials()``."""
    return settings.kafka.faust_credentials()
