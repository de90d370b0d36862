"""The transaction-id record (features/ids.py) against a real redis-server: new / repeat / conflict, the
stored first result, the horizon, lost functions, and the RESP3 replies redis-py 8 asks for by default."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from features.ids import Claim, TransactionIds


def claim(tx: str, content: str, offset: int) -> Claim:
    return Claim(tx, content, "transactions", 2, offset)


async def test_first_content_wins_within_one_call_and_across_calls(redis_client: aioredis.Redis,
                                                                   key_prefix: str) -> None:
    ids = TransactionIds(redis_client, key_prefix=key_prefix)
    first = await ids.claim([claim("t1", "aa", 1), claim("t1", "aa", 2), claim("t1", "bb", 3), claim("t2", "aa", 4)])
    assert [r.status for r in first] == ["new", "repeat", "conflict", "new"]
    owner = first[2].first
    assert owner is not None and (owner.content_hash, owner.topic, owner.partition, owner.offset) == (
        "aa", "transactions", 2, 1)
    later = await ids.claim([claim("t1", "bb", 9), claim("t2", "aa", 10)])
    assert [r.status for r in later] == ["conflict", "repeat"]
    assert later[1].outcome is None  # no result stored yet: the repeat is scored from the stored vector


async def test_a_repeat_gets_the_first_stored_result_and_later_ones_do_not_replace_it(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    ids = TransactionIds(redis_client, key_prefix=key_prefix)
    await ids.claim([claim("t1", "aa", 1)])
    await ids.record_outcomes([("t1", b'{"score": 0.5}')])
    await ids.record_outcomes([("t1", b'{"score": 0.9}')])  # a second scoring of an in-flight repeat
    (again,) = await ids.claim([claim("t1", "aa", 7)])
    assert (again.status, again.outcome) == ("repeat", b'{"score": 0.5}')
    (other,) = await ids.claim([claim("t1", "zz", 8)])
    assert other.status == "conflict" and other.outcome is None


async def test_the_record_expires_after_the_horizon_and_a_result_does_not_revive_it(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    ids = TransactionIds(redis_client, key_prefix=key_prefix, horizon_s=1.0)
    await ids.claim([claim("t1", "aa", 1)])
    ttl = await redis_client.pttl(ids.key("t1"))
    assert 0 < ttl <= 1000
    await asyncio.sleep(1.3)
    await ids.record_outcomes([("t1", b"{}")])  # after expiry: must not create a key without a TTL
    assert await redis_client.exists(ids.key("t1")) == 0
    (again,) = await ids.claim([claim("t1", "bb", 2)])
    assert again.status == "new"  # after the horizon the id is new again, whatever its content


async def test_lost_functions_are_loaded_again(redis_client: aioredis.Redis, key_prefix: str) -> None:
    ids = TransactionIds(redis_client, key_prefix=key_prefix)
    await ids.claim([claim("t1", "aa", 1)])
    await redis_client.execute_command("FUNCTION", "DELETE", "fraudstream_ids_v1")
    (again,) = await ids.claim([claim("t1", "aa", 2)])
    assert again.status == "repeat"


async def test_new_ids_are_answered_in_one_round_trip_under_resp2_and_resp3(redis_url: str, key_prefix: str) -> None:
    """A new id's reply is a null: ``_`` in RESP3 (redis-py 8's default), ``$-1`` in RESP2. A reply the
    parser did not know used to fail the first attempt; the retry then saw the claim it had made."""
    for protocol in (2, 3):
        client = aioredis.Redis.from_url(redis_url, protocol=protocol)
        try:
            ids = TransactionIds(client, key_prefix=f"{key_prefix}:{protocol}")
            results = await ids.claim([claim(f"n{i}", "aa", i) for i in range(50)])
            assert {r.status for r in results} == {"new"}
        finally:
            await client.aclose()
