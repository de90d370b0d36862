"""OrderedLane and submit/collect against a real redis-server: batches sent before the previous one's
replies were read run in send order, a broken connection replays what was not read, and the features of
overlapped batches are those of the batches applied one after another."""

from __future__ import annotations

import numpy as np
import pytest
import redis.asyncio as aioredis

from features import RedisFeatureStore
from features.resp import OrderedLane, ScriptReplyError, pack_commands
from tests.fixtures.events import IDX, T0, tx


def _rpush(key: str, *values: str) -> tuple[bytes, int]:
    return pack_commands([[b"RPUSH", key.encode(), v.encode()] for v in values]), len(values)


async def test_batches_run_and_answer_in_send_order(redis_client: aioredis.Redis, key_prefix: str) -> None:
    lane = OrderedLane(redis_client)
    key = f"{key_prefix}:order"
    first = await lane.send(*_rpush(key, "a", "b"))
    second = await lane.send(*_rpush(key, "c"))  # sent before the first batch's replies were read

    assert await lane.receive(first) == [1, 2]
    assert await lane.receive(second) == [3]
    assert await redis_client.lrange(key, 0, -1) == [b"a", b"b", b"c"]
    await redis_client.delete(key)
    await lane.close()


async def test_a_batch_read_early_keeps_the_replies_before_it(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    lane = OrderedLane(redis_client)
    key = f"{key_prefix}:early"
    first = await lane.send(*_rpush(key, "a"))
    second = await lane.send(*_rpush(key, "b"))

    assert await lane.receive(second) == [2]  # the first batch's replies were read on the way
    assert await lane.receive(first) == [1]
    assert await redis_client.lrange(key, 0, -1) == [b"a", b"b"]
    await redis_client.delete(key)
    await lane.close()


async def test_an_error_reply_is_raised_for_its_own_batch_only(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    lane = OrderedLane(redis_client)
    key = f"{key_prefix}:errors"
    bad = await lane.send(pack_commands([[b"FCALL", b"no_such_function", b"0"]]), 1)
    good = await lane.send(*_rpush(key, "a"))

    assert await lane.receive(good) == [1]
    with pytest.raises(ScriptReplyError, match="1 of 1 commands failed") as raised:
        await lane.receive(bad)
    assert raised.value.noscript
    await redis_client.delete(key)
    await lane.close()


async def test_a_broken_connection_replays_every_unread_batch_in_order(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    lane = OrderedLane(redis_client)
    key = f"{key_prefix}:replayed"

    def set_many(*pairs: tuple[str, str]) -> tuple[bytes, int]:
        return pack_commands([[b"SET", f"{key}:{k}".encode(), v.encode()] for k, v in pairs]), len(pairs)

    async def lane_client_id() -> int | bytes:
        (client_id,) = await lane.receive(await lane.send(pack_commands([[b"CLIENT", b"ID"]]), 1))
        return client_id

    before = await lane_client_id()
    await redis_client.client_kill_filter(_type="normal")  # the lane's connection too
    first = await lane.send(*set_many(("x", "1"), ("y", "1")))
    second = await lane.send(*set_many(("x", "2")))

    replies: list[bytes | int] | None = None
    for _ in range(3):  # the first read may still see the killed connection
        try:
            replies = await lane.receive(first)
            break
        except (ConnectionError, OSError, aioredis.ConnectionError):
            continue
    assert replies == [b"OK", b"OK"]
    assert await lane.receive(second) == [b"OK"]
    assert await redis_client.get(f"{key}:x") == b"2"  # the second batch ran after the first
    assert await redis_client.get(f"{key}:y") == b"1"
    assert await lane_client_id() != before  # it did run on a new connection
    await redis_client.delete(f"{key}:x", f"{key}:y")
    await lane.close()


async def test_overlapped_batches_get_the_features_of_sequential_ones(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    events = [tx(i, T0 + 97 * i, amount=3.0 + i, card=f"c{i % 3}", terminal=f"t{i % 2}") for i in range(24)]
    batches = [events[0:7], events[7:15], events[15:24]]  # cards and terminals recur across batches
    sequential = RedisFeatureStore(redis_client, key_prefix=f"{key_prefix}-seq")
    expected = [await sequential.apply_and_read(batch) for batch in batches]

    overlapped = RedisFeatureStore(redis_client, key_prefix=f"{key_prefix}-lane")
    first = await overlapped.submit(batches[0])
    second = await overlapped.submit(batches[1])
    got = [await overlapped.collect(first)]
    third = await overlapped.submit(batches[2])
    got += [await overlapped.collect(second), await overlapped.collect(third)]

    for want, have in zip(expected, got, strict=True):
        assert np.array_equal(want, have)
    await sequential.purge()
    await overlapped.purge()
    await overlapped.close()


async def test_collect_reloads_lost_functions(redis_client: aioredis.Redis, key_prefix: str) -> None:
    store = RedisFeatureStore(redis_client, key_prefix=key_prefix)
    first = await store.collect(await store.submit([tx(1, T0)]))
    await redis_client.function_flush()

    # both batches were sent before either was read: the second is refused too and sent again after the first
    pending_a = await store.submit([tx(1, T0), tx(2, T0 + 1)])
    pending_b = await store.submit([tx(3, T0 + 2)])
    again = await store.collect(pending_a)
    then = await store.collect(pending_b)
    assert np.array_equal(again[0], first[0])
    assert again[1, IDX["card_count_10m"]] == 2
    assert then[0, IDX["card_count_10m"]] == 3
    await store.purge()
    await store.close()
