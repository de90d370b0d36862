"""Connections are owned by configuration: only the bottom layer (``config/``) builds a Kafka or Redis client
or a gRPC channel to the model server, or reads a connection secret; everything else asks ``settings.kafka``
/ ``settings.redis`` / ``settings.model`` (or a ``KafkaConnection`` / ``RedisConnection`` /
``ModelConnection``), which always pass the credentials, TLS/SASL, timeouts and the retry policy.

Read from the source (AST), so a client built in a branch no test runs is found too.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import grpc
import pytest

from config.kafka import KafkaConnection
from config.model import GrpcRetryPolicy, ModelConnection
from config.redis import RedisConnection
from config.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
ABOVE_CONFIG = ["fraudstream", "streams", "features", "scoring", "training", "schemas", "monitoring"]
CLIENT_CLASSES = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient", "Redis",
                  "StrictRedis", "RedisCluster"}
CLIENT_BUILDERS = {"from_url", "from_pool", "insecure_channel", "secure_channel"}
SECRET_FIELDS = {"kafka_sasl_password", "redis_password", "card_hash_secret"}


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in CLIENT_CLASSES or name in CLIENT_BUILDERS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: builds a client ({name})")
        elif isinstance(node, ast.Attribute) and node.attr in SECRET_FIELDS:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: reads {node.attr}")
    return found


def test_only_config_builds_clients_or_reads_connection_secrets() -> None:
    files = [p for package in ABOVE_CONFIG for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 100  # the packages were found
    hits = [hit for path in files for hit in _violations(path)]
    assert not hits, ("build clients through settings.kafka / settings.redis (config/), not here:\n"
                      + "\n".join(hits))


def test_the_scan_finds_a_client_built_by_hand(tmp_path: Path) -> None:
    probe = ROOT / "streams" / "_probe_for_test.py"  # inside the tree, as a real module would be
    probe.write_text("import redis\nfrom aiokafka import AIOKafkaProducer\n"
                     "p = AIOKafkaProducer(bootstrap_servers='x')\nr = redis.Redis.from_url('redis://x')\n"
                     "s = settings.redis_password\nimport grpc\nc = grpc.aio.insecure_channel('x:1')\n"
                     "t = grpc.aio.secure_channel('x:1', grpc.ssl_channel_credentials())\n")
    try:
        assert len(_violations(probe)) == 5
    finally:
        probe.unlink()


async def test_the_factories_always_pass_credentials_and_timeouts() -> None:  # aiokafka wants a loop
    settings = Settings(_env_file=None, kafka_security_protocol="SASL_SSL",  # type: ignore[call-arg]
                        kafka_sasl_username="fraud", kafka_sasl_password="kafka-pw", redis_username="fraud",
                        redis_password="redis-pw")
    kafka = settings.kafka
    assert isinstance(kafka, KafkaConnection)
    # A caller's own options (a shorter timeout) never drop the security options.
    admin = kafka.admin(request_timeout_ms=3000)
    assert admin._client._request_timeout_ms == 3000
    assert admin._client._security_protocol == "SASL_SSL"
    assert admin._client._sasl_plain_password == "kafka-pw"
    producer_options = kafka._options({"security_protocol": "PLAINTEXT"})
    assert producer_options["security_protocol"] == "SASL_SSL"
    assert producer_options["request_timeout_ms"] == 40_000

    redis = settings.redis
    assert isinstance(redis, RedisConnection)
    client = redis.sync_client(username="someone-else", password="guess")
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("fraud", "redis-pw")
    assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (2.0, 5.0)
    client.close()
    for secret in ("kafka-pw", "redis-pw"):
        assert secret not in repr(kafka) + repr(redis)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_and_aiokafka_get_the_same_security(protocol: str) -> None:
    kafka = KafkaConnection(bootstrap="127.0.0.1:1", security_protocol=protocol,  # type: ignore[arg-type]
                            sasl_username="fraud")
    options, credentials = kafka.client_options(), kafka.faust_credentials()
    assert (credentials is None) == (options == {}) == (protocol == "PLAINTEXT")
    if protocol.startswith("SASL"):
        assert credentials.username == options["sasl_plain_username"] == "fraud"


async def test_the_model_connection_is_the_settings_and_builds_the_channel() -> None:  # grpc.aio wants a loop
    settings = Settings(_env_file=None, model_backend="tfserving://tfs:8500/fraud_dnn?label=canary",  # type: ignore[call-arg]
                        model_deadline_s=0.4, model_outage_grace_s=12.0)
    model = settings.model
    assert isinstance(model, ModelConnection)
    assert (model.target, model.model_name, model.label) == ("tfs:8500", "fraud_dnn", "canary")
    assert (model.call_deadline_s, model.outage_grace_s) == (0.4, 12.0)
    # a deadline in the URI wins over the setting
    assert ModelConnection(backend="tfserving://tfs/m?deadline_ms=250", deadline_s=0.4).call_deadline_s == 0.25
    options = dict(model.channel_options())
    policy = json.loads(str(options["grpc.service_config"]))["methodConfig"][0]["retryPolicy"]
    assert policy["maxAttempts"] == 3 and "UNAVAILABLE" in policy["retryableStatusCodes"]
    assert options["grpc.enable_retries"] == 1
    assert json.loads(GrpcRetryPolicy(retries=0).service_config()) == {}
    channel = model.channel()
    try:
        assert isinstance(channel, grpc.aio.Channel)
    finally:
        await channel.close()
    assert ModelConnection.tfserving("h:1", "m", label="stable").backend == "tfserving://h:1/m?label=stable"
