"""Security guards: credentials really reach the clients, Redis ACLs work end to end, no secret in a repr,
and no code-executing deserialiser is loaded from data or topics.

These are fast and run in ``make test`` (no ``chaos`` mark); the Redis ACL test starts its own
``redis-server`` with an ACL user, because the session stack runs Redis without one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import pytest
import redis

from config.settings import Settings, kafka_client_options, redis_client
from config.settings import faust_credentials as _credentials
from features import RedisFeatureStore, TransactionEvent
from features.errors import FeatureStoreUnavailable
from fraudstream.stack.redis import scratch_redis
from tests.fixtures.stack import require_redis_server

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["config", "fraudstream", "streams", "features", "scoring", "training", "schemas", "monitoring"]
# Formats and calls that can run code while loading bytes. SavedModels are loaded only from the model
# repository an operator controls (never from a topic or a data file), so tf.saved_model.load is not here.
UNSAFE = re.compile(
    r"\bimport pickle\b|\bfrom pickle\b|\bcPickle\b|\bpickle\.loads?\b|\bmarshal\.loads?\b|\bshelve\b|\bdill\b"
    r"|\bjoblib\b|\bread_pickle\b|allow_pickle\s*=\s*True|\byaml\.load\(|\byaml\.unsafe_load\b|\btorch\.load\b"
    r"|safe_mode\s*=\s*False|\beval\(|\bexec\("
)


def test_no_code_executing_deserialiser_in_the_packages() -> None:
    hits = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if UNSAFE.search(line.split("#", 1)[0]):
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "code-executing deserialisation:\n" + "\n".join(hits)


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_worker_passes_kafka_sasl_scram_and_tls_settings() -> None:
    settings = _settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                         kafka_sasl_username="fraud-worker", kafka_sasl_password="s3cret-pw")
    credentials = _credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("fraud-worker", "s3cret-pw")
    assert getattr(credentials.mechanism, "value", credentials.mechanism) == "SCRAM-SHA-512"
    assert credentials.ssl_context is not None  # SASL over TLS, verified against the default CAs
    assert isinstance(_credentials(_settings(kafka_security_protocol="SSL")), faust.SSLCredentials)
    assert _credentials(_settings()) is None
    rebuild = kafka_client_options(settings)  # rebuild, monitor, trainer and publisher clients
    assert rebuild["security_protocol"] == "SASL_SSL" and rebuild["sasl_mechanism"] == "SCRAM-SHA-512"
    assert rebuild["sasl_plain_username"] == "fraud-worker" and rebuild["sasl_plain_password"] == "s3cret-pw"


def test_secrets_are_not_in_the_settings_repr() -> None:
    settings = _settings(kafka_sasl_password="kafka-pw-123", redis_password="redis-pw-456",
                         card_hash_secret="card-secret-789", api_token="token-abc")
    text = repr(settings) + str(settings) + settings.model_dump_json()
    for secret in ("kafka-pw-123", "redis-pw-456", "card-secret-789", "token-abc"):
        assert secret not in text


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server whose default user is off and whose only user may touch the feature keys."""
    require_redis_server()
    acl = tmp_path / "users.acl"
    acl.write_text("user default off\nuser fraud on >worker-pw ~fs:* resetchannels +@all -@dangerous\n")
    with scratch_redis(tmp_path / "redis", server_args=["--aclfile", str(acl)], timeout_s=20,
                       username="fraud", password="worker-pw") as url:
        yield url


@pytest.mark.integration
async def test_worker_redis_client_uses_the_acl_user_and_password(acl_redis: str) -> None:
    event = TransactionEvent(transaction_id="acl-1", card_ref="ab" * 16, terminal_id="T1",
                             event_time=1.77e9, amount=10.0)
    good = _settings(redis_url=acl_redis, redis_username="fraud", redis_password="worker-pw")
    client = redis_client(good)
    store = RedisFeatureStore(client)
    try:
        await store.load_scripts()
        first = await store.apply_and_read([event])
        again = await store.apply_and_read([event])
        assert (first == again).all() and first[0].any()
        # The ACL confines the worker's user to its own keys and keeps it away from dangerous commands.
        with pytest.raises(redis.exceptions.NoPermissionError):
            await client.set("other:key", b"x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            await client.flushall()
    finally:
        await client.aclose()

    for wrong in (_settings(redis_url=acl_redis),
                  _settings(redis_url=acl_redis, redis_username="fraud", redis_password="wrong")):
        client = redis_client(wrong)
        try:
            with pytest.raises((FeatureStoreUnavailable, redis.exceptions.AuthenticationError,
                                redis.exceptions.ResponseError)):
                await RedisFeatureStore(client).apply_and_read([event])
        finally:
            await client.aclose()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A redis-server that only speaks TLS (a throwaway CA; server certificate for 127.0.0.1) and has
    an ACL user; yields its port-only URL part and the CA file."""
    require_redis_server()
    if shutil.which("openssl") is None:  # installed by `make setup`
        pytest.fail("openssl is not installed: run `make setup` (or apt-get install -y openssl)")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "1", "-subj", "/CN=fraudstream-test-ca", cwd=tmp_path)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=tmp_path)
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "1", "-extfile", "san.ext", cwd=tmp_path)
    acl = tmp_path / "users.acl"
    acl.write_text("user default off\nuser fraud on >tls-pw ~fs:* resetchannels +@all -@dangerous\n")
    ca = tmp_path / "ca.crt"
    with scratch_redis(
        tmp_path / "redis", tls=True, timeout_s=20, username="fraud", password="tls-pw", ssl_ca_certs=str(ca),
        server_args=["--aclfile", str(acl), "--tls-cert-file", str(tmp_path / "server.crt"),
                     "--tls-key-file", str(tmp_path / "server.key"), "--tls-ca-cert-file", str(ca),
                     "--tls-auth-clients", "no"],
    ) as url:
        yield url.removeprefix("rediss://").removesuffix("/0"), ca


@pytest.mark.integration
async def test_feature_store_over_tls_with_acl(tls_redis: tuple[str, Path]) -> None:
    """``rediss://`` with the CA in the URL: the worker's client and the feature store's own RESP channel
    both run over TLS (the channel borrows redis-py's TLS streams); plain TCP to the TLS port fails."""
    address, ca = tls_redis
    event = TransactionEvent(transaction_id="tls-1", card_ref="cd" * 16, terminal_id="T1",
                             event_time=1.77e9, amount=10.0)
    good = _settings(redis_url=f"rediss://{address}/0?ssl_ca_certs={ca}", redis_username="fraud",
                     redis_password="tls-pw")
    client = redis_client(good)
    try:
        store = RedisFeatureStore(client)
        await store.load_scripts()
        first = await store.apply_and_read([event])
        assert (first == await store.apply_and_read([event])).all()
    finally:
        await client.aclose()
    plain = redis_client(_settings(redis_url=f"redis://{address}/0", redis_username="fraud",
                                   redis_password="tls-pw"))
    try:
        with pytest.raises((FeatureStoreUnavailable, redis.exceptions.ConnectionError)):
            await RedisFeatureStore(plain).apply_and_read([event])
    finally:
        await plain.aclose()
