"""The one place that builds Kafka clients: producers, consumers, admin clients and faust's credentials.

``KafkaConnection`` is the connection part of the settings (``settings.kafka``): bootstrap servers, TLS /
SASL and the request timeout. Every client of fraudstream is built by its factories, so one setting secures
them all and nobody else reads the SASL password. The topic helpers below (``ensure_topics``,
``delete_topics``, ``partitions_of``, ``assign_at_end``) take a connection, or a bare bootstrap string for
a plaintext cluster (local stacks, tests).

aiokafka is imported inside the factories: ``fraudstream --help`` and settings-only commands stay fast.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
DEFAULT_REQUEST_TIMEOUT_MS = 40_000
"""aiokafka's own default, passed explicitly so that every client states its timeout."""


@dataclass(frozen=True)
class KafkaConnection:
    """Where the cluster is and how to authenticate; the factory of every Kafka client."""

    bootstrap: str
    security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS
    replication_factor: int = 1
    """Replicas of the topics ``ensure_topics`` creates through this connection (3 on a three-broker cluster)."""
    min_insync_replicas: int | None = None
    """Their ``min.insync.replicas``: the replicas an ``acks=all`` write must reach (None: the broker's default)."""

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)

    def _password(self) -> str | None:
        return self.sasl_password.get_secret_value() if self.sasl_password else None

    def client_options(self) -> dict[str, Any]:
        """aiokafka keyword arguments for TLS / SASL (nothing for PLAINTEXT). The one mapping of the
        security settings; ``faust_credentials`` is the same mapping in faust's terms."""
        protocol = self.security_protocol
        if protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": protocol}
        if protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = self._ssl_context()
        if protocol.startswith("SASL"):
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self._password())
        return options

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        # A caller may shorten the timeout (a health probe) but never drop the security options.
        return {"bootstrap_servers": self.bootstrap, "request_timeout_ms": self.request_timeout_ms,
                **options, **self.client_options()}

    def producer(self, **options: Any) -> AIOKafkaProducer:
        from aiokafka import AIOKafkaProducer

        return AIOKafkaProducer(**self._options(options))

    def consumer(self, *topics: str, **options: Any) -> AIOKafkaConsumer:
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(*topics, **self._options(options))

    def admin(self, **options: Any) -> AIOKafkaAdminClient:
        from aiokafka.admin import AIOKafkaAdminClient

        return AIOKafkaAdminClient(**self._options(options))

    @property
    def faust_broker(self) -> str:
        return f"kafka://{self.bootstrap}"

    def faust_credentials(self) -> Any:
        """faust's ``broker_credentials`` for these settings (None for PLAINTEXT)."""
        import faust

        if self.security_protocol == "PLAINTEXT":
            return None
        context = self._ssl_context()
        if self.security_protocol == "SSL":
            return faust.SSLCredentials(context)
        return faust.SASLCredentials(
            username=self.sasl_username, password=self._password() or "", mechanism=self.sasl_mechanism,
            ssl_context=context if self.security_protocol == "SASL_SSL" else None,
        )


def as_connection(kafka: KafkaConnection | str) -> KafkaConnection:
    """A bare bootstrap string is a plaintext cluster (a local stack or a test's broker)."""
    return kafka if isinstance(kafka, KafkaConnection) else KafkaConnection(bootstrap=kafka)


async def partitions_of(kafka: KafkaConnection | str, topics: list[str]) -> list[TopicPartition]:
    """Every partition of ``topics``."""
    from aiokafka import TopicPartition

    admin = as_connection(kafka).admin()
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return [
        TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]
    ]


async def assign_at_end(consumer: AIOKafkaConsumer, kafka: KafkaConnection | str, topics: list[str]) -> None:
    """Assign every partition of ``topics`` and position the consumer at their current ends."""
    parts = await partitions_of(kafka, topics)
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    for tp in parts:  # materialise the positions before anything is produced
        await consumer.position(tp)


TOPIC_ALREADY_EXISTS = 36
"""Kafka's error code when another client created the topic first (not an error here)."""


async def ensure_topics(kafka: KafkaConnection | str, topics: dict[str, int]) -> list[str]:
    """Create the topics (name → partitions) that do not exist yet, replicated as the connection says
    (``replication_factor``, ``min.insync.replicas``; a bare bootstrap: one replica, the broker's default);
    returns those created. Existing topics are left as they are. A refusal (e.g. more replicas than brokers)
    raises."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import KafkaError

    connection = as_connection(kafka)
    replication_factor, min_isr = connection.replication_factor, connection.min_insync_replicas
    configs = {} if min_isr is None else {"min.insync.replicas": str(min_isr)}
    admin = connection.admin(request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, partitions, replication_factor, topic_configs=configs)
                   for name, partitions in topics.items() if name not in existing]
        if missing:
            response = await admin.create_topics(missing)
            refused = [f"{error[0]}: {error[2] if len(error) > 2 else error[1]}"
                       for error in response.topic_errors if error[1] not in (0, TOPIC_ALREADY_EXISTS)]
            if refused:
                msg = f"Kafka refused to create topics ({replication_factor} replicas): {'; '.join(refused)}"
                raise KafkaError(msg)
        return [t.name for t in missing]
    finally:
        await admin.close()


async def delete_topics(kafka: KafkaConnection | str, names: list[str]) -> None:
    admin = as_connection(kafka).admin()
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()
