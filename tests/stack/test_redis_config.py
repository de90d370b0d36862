"""The stack's redis-server persists every write (AOF, fsync each second) and rewrites the AOF per 2 GB:
with Redis's default (64 MB) the feature state's writes made it fork and rewrite every few seconds under
load, which put the pipeline's p99 above its target (fraudstream/stack/redis.py)."""

from __future__ import annotations

import redis


def test_the_stack_redis_appends_every_write_and_rewrites_rarely(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        config = client.config_get("appendonly") | client.config_get("appendfsync")
        config |= client.config_get("auto-aof-rewrite-min-size")
        assert config == {"appendonly": "yes", "appendfsync": "everysec",
                          "auto-aof-rewrite-min-size": str(2 * 1024**3)}
    finally:
        client.close()
