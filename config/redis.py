"""The one place that builds Redis clients (``settings.redis``): URL, ACL user and password, timeouts.

The worker's timeouts are the defaults: a connection that cannot be made in 2 s or a reply that takes more
than 5 s is an outage the caller retries, not a hang; idle connections are checked every 10 s. A caller
may shorten them (a health probe), never drop the credentials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster


@dataclass(frozen=True)
class RedisConnection:
    url: str
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    connect_timeout_s: float = 2.0
    timeout_s: float = 5.0
    health_check_interval_s: float = 10.0
    cluster: bool = False
    """``url`` is one node of a Redis Cluster: ``client()`` is then a ``RedisCluster``, which discovers the
    other nodes; the feature store routes each call to its slot's primary (features/cluster.py)."""

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        password = self.password.get_secret_value() if self.password else None
        return {"socket_connect_timeout": self.connect_timeout_s, "socket_timeout": self.timeout_s,
                "health_check_interval": self.health_check_interval_s, **options,
                "username": self.username, "password": password}

    def client(self, **options: Any) -> aioredis.Redis | RedisCluster:
        """An asyncio client (the worker, the monitor, rebuild, warm-up, parity)."""
        import redis.asyncio as aioredis

        if self.cluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster.from_url(self.url, **self._options(options))
        return aioredis.Redis.from_url(self.url, **self._options(options))

    def node_client(self, **options: Any) -> aioredis.Redis:
        """An asyncio client of one redis-server, whatever ``cluster`` says (a benchmark's own server)."""
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(self.url, **self._options(options))

    def sync_client(self, **options: Any) -> redis.Redis:
        """A blocking client (health probes, the stack, benchmarks' housekeeping)."""
        import redis

        return redis.Redis.from_url(self.url, **self._options(options))
