"""The online engine against a real redis-server: idempotency, the late-event rule, labels, bounds."""

from __future__ import annotations

import numpy as np
import redis.asyncio as aioredis

from features import FEATURE_LIST, LabelEvent, RedisFeatureStore
from features.errors import FeatureScriptError, FeatureStoreUnavailable
from features.online import entity_keys
from features.resp import classify
from tests.fixtures.events import DAY, IDX, T0, tx


async def snapshot(client: aioredis.Redis, prefix: str) -> dict[bytes, object]:
    state: dict[bytes, object] = {}
    async for key in client.scan_iter(match=f"{prefix}:*"):
        kind = await client.type(key)
        if kind == b"hash":
            state[key] = await client.hgetall(key)
        elif kind == b"zset":
            state[key] = await client.zrange(key, 0, -1, withscores=True)
    return state


async def test_redelivery_changes_nothing(redis_client: aioredis.Redis, key_prefix: str) -> None:
    store = RedisFeatureStore(redis_client, key_prefix=key_prefix)
    events = [tx(i, T0 + 600 * i, amount=5.0 + i, terminal=f"t{i % 2}") for i in range(6)]
    first = await store.apply_and_read(events)
    before = await snapshot(redis_client, key_prefix)
    again = await store.apply_and_read(events[::-1])
    assert np.array_equal(again[::-1], first)
    assert await snapshot(redis_client, key_prefix) == before
    assert first.shape == (6, len(FEATURE_LIST))
    assert first[-1, IDX["card_count_1h"]] == 6
    await store.purge()


async def test_duplicate_within_one_batch(redis_client: aioredis.Redis, key_prefix: str) -> None:
    store = RedisFeatureStore(redis_client, key_prefix=key_prefix)
    a, b = tx(1, T0), tx(2, T0 + 60)
    out = await store.apply_and_read([a, b, a])
    assert np.array_equal(out[2], out[0])
    assert out[1, IDX["card_count_10m"]] == 2
    await store.purge()


async def test_late_event_uses_the_watermark(redis_client: aioredis.Redis, key_prefix: str) -> None:
    store = RedisFeatureStore(redis_client, key_prefix=key_prefix)
    out = await store.apply_and_read([tx(1, T0 + 5 * DAY), tx(2, T0)])  # the second is 5 days late
    late = out[1]
    # counted in the current tiles (t_eff = watermark), not 5 days back
    assert late[IDX["card_count_10m"]] == 2
    assert late[IDX["card_seconds_since_prev"]] == 0.0
    # calendar features keep the raw event time
    assert late[IDX["tx_hour"]] == 8.0
    assert out[0][IDX["tx_is_weekend"]] == 1.0  # T0 + 5 days is a Sunday
    assert late[IDX["tx_is_weekend"]] == 0.0
    await store.purge()


async def test_label_counts_only_once_available(redis_client: aioredis.Redis, key_prefix: str) -> None:
    store = RedisFeatureStore(redis_client, key_prefix=key_prefix)
    fraud_t = T0
    label = LabelEvent(
        transaction_id="tx1",
        card_ref="c1",
        terminal_id="t1",
        event_time=fraud_t,
        available_at=fraud_t + 9 * DAY,
        is_fraud=True,
    )
    await store.apply_and_read([tx(1, fraud_t)])
    await store.apply_labels([label, label])  # idempotent
    col = IDX["terminal_delayed_fraud_count_7d"]
    before = await store.apply_and_read([tx(2, fraud_t + 8 * DAY, card="c2")])
    after = await store.apply_and_read([tx(3, fraud_t + 9 * DAY, card="c3")])
    assert before[0, col] == 0.0  # in the delayed window, but not yet known
    assert after[0, col] == 1.0
    assert after[0, IDX["terminal_delayed_tx_count_7d"]] == 1.0
    assert after[0, IDX["terminal_delayed_fraud_rate_7d"]] == 1.0
    # a transaction applied late at the terminal also sees it: t_eff is the terminal's watermark
    late = await store.apply_and_read([tx(4, fraud_t + 1 * DAY, card="c4")])
    assert late[0, col] == 1.0
    await store.purge()


async def test_state_is_bounded_and_expires(redis_client: aioredis.Redis, key_prefix: str) -> None:
    store = RedisFeatureStore(redis_client, key_prefix=key_prefix, trim_every_s=DAY)
    # one card at 200 terminals over 120 days: fields for dedup and counterparties must be trimmed
    events = [tx(i, T0 + i * 0.6 * DAY, terminal=f"t{i}") for i in range(200)]
    for start in range(0, len(events), 50):
        await store.apply_and_read(events[start : start + 50])
    s, x, _ = entity_keys(store.key_prefix, "card", "c1")
    fields = await redis_client.hkeys(s)
    dedup = [f for f in fields if f.startswith(b"d:")]
    seen = [f for f in fields if f.startswith(b"c:")]
    assert len(dedup) <= 2 * DAY / (0.6 * DAY) + 1  # horizon + one trim period
    assert len(seen) <= 31 / 0.6 + 2  # 30 days of counterparties + one trim period
    blob = await redis_client.hget(s, "s")
    assert blob is not None and len(blob) <= 8 * (8 + 4 + 8 * (10 + 12 + 24 + 30))
    assert await redis_client.pttl(s) > 0 and await redis_client.pttl(x) > 0
    await store.purge()


async def test_lost_functions_are_reloaded(redis_client: aioredis.Redis, key_prefix: str) -> None:
    store = RedisFeatureStore(redis_client, key_prefix=key_prefix)
    first = await store.apply_and_read([tx(1, T0)])
    await redis_client.function_flush()
    again = await store.apply_and_read([tx(1, T0), tx(2, T0 + 1)])
    assert np.array_equal(again[0], first[0])
    assert again[1, IDX["card_count_10m"]] == 2
    await store.purge()


def test_error_replies_are_classified() -> None:
    assert classify([b"LOADING Redis is loading the dataset in memory"]) == (False, True)
    assert classify([b"MISCONF Errors writing to the AOF file: No space left on device"]) == (False, True)
    assert classify([b"ERR Function not found"]) == (True, False)
    assert classify([b"NOSCRIPT No matching script."]) == (True, False)
    assert classify([b"ERR user_script:1: bad argument"]) == (False, False)
    assert FeatureStoreUnavailable.retryable and not FeatureScriptError.retryable
