"""Checks a command runs before it needs Kafka or Redis, so that a stack that is down is one line with the fix
(``cannot reach Kafka at … — is the stack up? run: fraudstream stack up``), not a framework's traceback
half-way through start-up (the faust worker printed 36 lines)."""

from __future__ import annotations

import asyncio
import logging

from config.settings import Settings
from fraudstream.cli.errors import CommandError, ServiceUnreachable, redis_address
from fraudstream.cli.tlscheck import certificate_problem

PROBE_TIMEOUT_S = 5.0


async def _kafka_answers(settings: Settings, timeout_s: float) -> None:
    from aiokafka.errors import KafkaError

    admin = settings.kafka.admin(request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.list_topics(), timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        problem = await asyncio.to_thread(certificate_problem, settings.kafka, timeout_s)
        if problem is not None:  # up and answering, but not trusted: say that, not "is the stack up?"
            raise CommandError(problem) from exc
        detail = "" if "Unable to bootstrap" in str(exc) or isinstance(exc, TimeoutError) else str(exc)
        raise ServiceUnreachable.kafka(settings.kafka_bootstrap, detail) from exc
    finally:
        await admin.close()


class _RefusedCredentials(logging.Handler):
    """Remembers an authentication failure aiokafka logs while it retries the bootstrap: the exception it
    raises in the end only says it could not bootstrap, which reads as 'broker down'."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.refusal: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if self.refusal is None and ("SaslAuthenticationFailed" in text or "Authentication failed" in text):
            self.refusal = text.splitlines()[0][:300]


def require_kafka(settings: Settings, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise ``ServiceUnreachable`` unless the Kafka cluster answers a metadata request (with the
    configured TLS/SASL options, so bad credentials show here too: as refused credentials, not as a
    broker that is down)."""
    # aiokafka logs every refused connection at ERROR; the one-line message says it better.
    aiokafka_log = logging.getLogger("aiokafka")
    refused = _RefusedCredentials()
    aiokafka_log.addHandler(refused)
    aiokafka_log.propagate = False
    try:
        asyncio.run(_kafka_answers(settings, timeout_s))
    except ServiceUnreachable as exc:
        if refused.refusal is not None:
            msg = (f"Kafka at {settings.kafka_bootstrap} refused the credentials ({refused.refusal}) — check "
                   "FRAUD_KAFKA_SASL_USERNAME, FRAUD_KAFKA_SASL_PASSWORD and FRAUD_KAFKA_SASL_MECHANISM")
            raise CommandError(msg) from exc
        raise
    finally:
        aiokafka_log.removeHandler(refused)
        aiokafka_log.propagate = True


def require_redis(settings: Settings, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise ``ServiceUnreachable`` unless Redis answers PING (credentials errors are raised as they are)."""
    import redis
    import redis.exceptions

    client = settings.redis.sync_client(socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        if isinstance(exc, redis.exceptions.AuthenticationError):
            raise
        raise ServiceUnreachable.redis(redis_address(settings.redis_url)) from exc
    finally:
        client.close()


def require_model(settings: Settings) -> None:
    """For the embedded backend: raise ``CommandError`` unless the model directory has a complete version
    (a worker without one would only fail deep inside faust's start-up). TF Serving is checked by the
    worker itself, which retries it (``model_outage_grace_s``)."""
    from scoring.errors import ModelNotFound
    from scoring.repository import scan

    spec = settings.model.spec
    if spec.kind != "local" or spec.path is None:
        return
    try:
        versions = scan(spec.path).versions
    except ModelNotFound:
        versions = ()
    if not versions:
        msg = (f"no model version in {spec.path} — train one first: fraudstream train --quick "
               "(or point FRAUD_MODEL_BACKEND at a model repository)")
        raise CommandError(msg)
