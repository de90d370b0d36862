"""Retried failures reach the worker's ``fraudstream_backend_errors_total`` (streams/failures.py, retry.py)."""

from __future__ import annotations

import pytest
import redis.exceptions
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry

from features.errors import FeatureStoreUnavailable
from monitoring.metrics import WorkerMetrics
from streams import failures
from streams.retry import retry_forever


def _wrapped(cause: BaseException) -> FeatureStoreUnavailable:
    try:
        raise FeatureStoreUnavailable("redis away") from cause
    except FeatureStoreUnavailable as exc:
        return exc


@pytest.mark.parametrize(("what", "error", "backend", "kind"), [
    ("feature state in Redis", _wrapped(TimeoutError("no reply")), "redis", "TimeoutError"),
    ("transaction ids in Redis", redis.exceptions.ConnectionError("refused"), "redis", "ConnectionError"),
    ("publish to Kafka", KafkaConnectionError("closed"), "kafka", "KafkaConnectionError"),
    ("publish to Kafka", OSError("reset"), "kafka", "OSError"),
    ("something else", OSError("reset"), "other", "OSError"),
])
def test_backend_and_kind(what: str, error: BaseException, backend: str, kind: str) -> None:
    assert failures.backend_of(what, error) == backend
    assert failures.kind_of(error) == kind


async def test_every_retried_attempt_is_counted_and_a_failing_hook_does_not_stop_the_retry() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise _wrapped(ConnectionError("redis closed the connection mid-batch"))
        return "ok"

    def broken(backend: str, kind: str) -> None:
        raise RuntimeError("a broken hook")

    removers = [failures.on_failure(metrics.backend_error), failures.on_failure(broken)]
    try:
        assert await retry_forever(flaky, what="feature state in Redis", first_delay_s=0.001) == "ok"
    finally:
        for remove in removers:
            remove()
    counted = metrics.registry.get_sample_value("fraudstream_backend_errors_total",
                                                {"backend": "redis", "kind": "ConnectionError"})
    assert counted == 3
