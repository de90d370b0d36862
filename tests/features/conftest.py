"""Fixtures of the feature tests: a throw-away redis-server for the session (its own keyspace and no
persistence, so property tests can purge and restart freely)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from fraudstream.stack.redis import scratch_redis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None:  # `make setup` installs it: a missing one is a broken setup
        pytest.fail("redis-server is not installed: run `make setup` (or apt-get install -y redis-server)")
    with scratch_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def key_prefix() -> str:
    """A fresh key prefix per test, so tests never see each other's state."""
    return f"fstest:{uuid.uuid4().hex[:10]}"
