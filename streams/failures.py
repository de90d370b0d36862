"""Which backend a retried failure came from, and who is told about it.

``retry_forever`` (streams/retry.py) retries Redis and Kafka calls until they succeed: the stream pauses
instead of losing records. Without a count of those failures a paused worker looked idle from outside:
during a Redis partition (measured with Toxiproxy, docs/reliability.md) ``/metrics`` showed nothing but a
flat throughput. Every failed attempt is reported here; the worker counts it in
``fraudstream_backend_errors_total{backend, kind}`` (``backend``: redis, kafka or other; ``kind``: the
error's class, for the feature store's wrapper the wrapped one: ``TimeoutError``, ``ConnectionError``…).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis.exceptions
from aiokafka.errors import KafkaError

from config.errors import FraudstreamError

log = logging.getLogger(__name__)
FailureHook = Callable[[str, str], None]
"""``hook(backend, kind)``; it must not raise (a failing hook is logged and the retry goes on)."""
_hooks: list[FailureHook] = []


def on_failure(hook: FailureHook) -> Callable[[], None]:
    """Call ``hook`` on every failed attempt of a retried call; returns a function that removes it."""
    _hooks.append(hook)
    return lambda: _hooks.remove(hook) if hook in _hooks else None


def backend_of(what: str, error: BaseException) -> str:
    """By the error's type, else by what was being retried (an ``OSError`` can come from either)."""
    if isinstance(error, KafkaError):
        return "kafka"
    if isinstance(error, redis.exceptions.RedisError):
        return "redis"
    lowered = what.lower()
    if "redis" in lowered:
        return "redis"
    return "kafka" if "kafka" in lowered else "other"


def kind_of(error: BaseException) -> str:
    """The error's class name; for a package's wrapper (``FeatureStoreUnavailable``…) the wrapped one."""
    cause = error.__cause__ if isinstance(error, FraudstreamError) else None
    return type(cause or error).__name__


def report(what: str, error: BaseException) -> None:
    """One failed attempt of ``what`` (``retry_forever``'s label, e.g. "feature state in Redis")."""
    if not _hooks:
        return
    backend, kind = backend_of(what, error), kind_of(error)
    for hook in list(_hooks):
        try:
            hook(backend, kind)
        except Exception:
            log.exception("failure hook %r failed", hook)
