"""Fixtures of the feature tests: a throw-away redis-server for the session (its own keyspace and no
persistence, so property tests can purge and restart freely) stands in for the stack's."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis


@pytest.fixture(scope="session")
def redis_url(scratch_redis_url: str) -> str:
    return scratch_redis_url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def key_prefix() -> str:
    """A fresh key prefix per test, so tests never see each other's state."""
    return f"fstest:{uuid.uuid4().hex[:10]}"
