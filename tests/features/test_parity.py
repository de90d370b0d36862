"""Online (real Redis) and offline engines agree: random histories, a simulated history, and (when the file
is there) the fdh data set read by ``--mapping fdh``."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pandas as pd
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import FEATURE_LIST, RedisFeatureStore
from features.definitions import (
    HOUR,
    MINUTE,
    W1D,
    W1H,
    W7D,
    W10M,
    AmountVsHistory,
    FeatureList,
    WindowedAggregate,
)
from features.history import load_fdh
from features.offline import _repeated, compute_offline
from features.online import entity_keys
from features.parity import TOLERANCE, run_parity, transaction_events
from training.simulated import load_simulated

T0 = 1_530_000_000.0
DAY = 86_400.0
DAY_S = 86_400
FDH_ENV = "FRAUDSTREAM_TEST_FDH"
"""The handbook's Parquet file, given explicitly (the suite never looks outside the clone by itself)."""


@st.composite
def histories(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random event sequences: few entities, bursts and gaps, late events, duplicates, labels."""
    n = draw(st.integers(min_value=1, max_value=40))
    gaps = draw(
        st.lists(
            st.sampled_from([0.0, 1.0, 59.0, 61.0, 300.0, 3599.0, 3 * 3600.0, DAY, 8 * DAY]),
            min_size=n,
            max_size=n,
        )
    )
    times = T0 + np.cumsum(gaps)
    rows = []
    for i in range(n):
        late = draw(st.sampled_from([0.0, 0.0, 0.0, 30.0, 2 * 3600.0, 2 * DAY]))
        has_geo = draw(st.booleans())
        rows.append(
            {
                "transaction_id": f"x{i}",
                "card_ref": draw(st.sampled_from(["a", "b", "c"])),
                "terminal_id": draw(st.sampled_from(["1", "2", "3"])),
                "event_time": float(times[i] - late),
                "amount": draw(st.sampled_from([0.0, 1.0, 9.99, 10.0, 10.0, 123.45, 5000.0])),
                "latitude": 50.0 + draw(st.integers(0, 100)) * 0.01 if has_geo else np.nan,
                "longitude": 4.0 + draw(st.integers(0, 100)) * 0.01 if has_geo else np.nan,
            }
        )
    for _ in range(draw(st.integers(min_value=0, max_value=5))):  # redeliveries, later in arrival order
        j = draw(st.integers(min_value=0, max_value=n - 1))
        k = draw(st.integers(min_value=j + 1, max_value=len(rows)))
        rows.insert(k, dict(rows[j]))
    tx = pd.DataFrame(rows)
    frauds = [r for r in rows[:n] if draw(st.integers(0, 3)) == 0]
    labels = pd.DataFrame(
        {
            "transaction_id": [r["transaction_id"] for r in frauds],
            "card_ref": [r["card_ref"] for r in frauds],
            "terminal_id": [r["terminal_id"] for r in frauds],
            "event_time": [r["event_time"] for r in frauds],
            "available_at": [r["event_time"] + draw(st.sampled_from([0.0, DAY, 7 * DAY, 7.5 * DAY])) for r in frauds],
            "is_fraud": [True] * len(frauds),
        },
        columns=["transaction_id", "card_ref", "terminal_id", "event_time", "available_at", "is_fraud"],
    )
    return tx, labels


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories())
async def test_property_parity(redis_url: str, history: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    tx, labels = history
    client = aioredis.Redis.from_url(redis_url)
    try:
        # small batches so labels interleave with transactions as they would on the stream
        result = await run_parity(
            client,
            tx,
            labels,
            batch_size=3,
            key_prefix=f"fsprop:{uuid.uuid4().hex[:8]}",
            dedup_horizon_s=1e9,
        )
    finally:
        await client.aclose()
    assert result.max_rel_diff <= TOLERANCE, result


async def test_zero_amounts_give_the_same_features_in_both_engines(redis_url: str) -> None:
    """Account verifications (amount 0): first on a card and a terminal (mean 0, so ratio and z-score
    divide by zero), a run of them, then ordinary amounts, then zero again; exact agreement, no NaN."""
    amounts = [0.0, 0.0, 0.0, 12.5, 0.0, 80.0, 0.0, 0.004, 0.005, 0.0]
    tx = pd.DataFrame({
        "transaction_id": [f"z{i}" for i in range(len(amounts))],
        "card_ref": ["a", "a", "b", "a", "b", "a", "b", "a", "a", "b"],
        "terminal_id": ["t", "t", "u", "t", "t", "u", "u", "t", "u", "t"],
        "event_time": [T0 + 90.0 * i for i in range(len(amounts))],
        "amount": amounts,
    })
    client = aioredis.Redis.from_url(redis_url)
    try:
        result = await run_parity(client, tx, None, batch_size=2, key_prefix=f"fszero:{uuid.uuid4().hex[:8]}")
    finally:
        await client.aclose()
    assert result.rows == len(amounts)
    assert result.max_abs_diff == 0.0, result
    offline = compute_offline(tx, None)
    assert np.isfinite(offline).all()
    for name in (n for n in FEATURE_LIST.names if n.startswith("card_amount_ratio")):
        ratio = FEATURE_LIST.names.index(name)
        if "_delay" in name:  # a baseline days back: this 15-minute history has none, so it is 0
            assert (offline[:, ratio] == 0.0).all()
        else:
            assert offline[0, ratio] == 0.0 and offline[3, ratio] > 0.0


# Delayed amount windows at every tile level, short enough for the random histories above to reach them.
DELAYED_AMOUNTS = FeatureList(
    name="delayed_amounts",
    features=(
        WindowedAggregate(entity="card", agg="count", window=W1H, delay_s=HOUR),
        WindowedAggregate(entity="card", agg="sum", window=W1D, delay_s=2 * HOUR),
        WindowedAggregate(entity="card", agg="std", window=W7D, delay_s=DAY_S),
        AmountVsHistory(entity="card", stat="ratio", window=W7D, delay_s=2 * DAY_S),
        AmountVsHistory(entity="terminal", stat="zscore", window=W1D, delay_s=HOUR),
        WindowedAggregate(entity="terminal", agg="mean", window=W10M, delay_s=10 * MINUTE),
        WindowedAggregate(entity="card", agg="mean", window=W7D),
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories())
async def test_property_parity_delayed_amount_windows(
    redis_url: str, history: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    tx, labels = history
    client = aioredis.Redis.from_url(redis_url)
    try:
        result = await run_parity(
            client,
            tx,
            labels,
            features=DELAYED_AMOUNTS,
            batch_size=3,
            key_prefix=f"fsprop:{uuid.uuid4().hex[:8]}",
            dedup_horizon_s=1e9,
        )
    finally:
        await client.aclose()
    assert result.max_rel_diff <= TOLERANCE, result


def test_delayed_window_reads_only_the_days_before_the_delay() -> None:
    """card_mean_7d_delay2d on day 9 covers day tiles 1..7: the day-0 and day-8/9 amounts stay out."""
    days = [0.0, 1.0, 5.0, 8.0, 9.0]
    tx = pd.DataFrame(
        {
            "transaction_id": [str(i) for i in range(len(days))],
            "card_ref": ["a"] * len(days),
            "terminal_id": ["t"] * len(days),
            "event_time": [T0 - T0 % DAY + d * DAY + 60.0 for d in days],
            "amount": [1000.0, 10.0, 30.0, 500.0, 40.0],
        }
    )
    features = FeatureList(
        name="x",
        features=(
            WindowedAggregate(entity="card", agg="mean", window=W7D, delay_s=2 * DAY_S),
            AmountVsHistory(entity="card", stat="ratio", window=W7D, delay_s=2 * DAY_S),
        ),
    )
    out = compute_offline(tx, None, features=features)
    assert out[4].tolist() == [20.0, 2.0]
    assert out[0].tolist() == [0.0, 0.0]  # nothing in the delayed window: mean 0, ratio 0 (undefined)


def test_offline_duplicates_repeat_the_first_vector() -> None:
    tx = pd.DataFrame(
        {
            "transaction_id": ["1", "2", "1"],
            "card_ref": ["a", "a", "a"],
            "terminal_id": ["t", "t", "t"],
            "event_time": [T0, T0 + 60, T0],
            "amount": [10.0, 20.0, 10.0],
        }
    )
    out = compute_offline(tx, None)
    assert np.array_equal(out[2], out[0])
    count = FEATURE_LIST.names.index("card_count_10m")
    assert list(out[:, count]) == [1.0, 2.0, 1.0]


@pytest.mark.slow
async def test_simulated_history_parity(redis_url: str) -> None:
    """20,000 transactions of the simulator: card-testing bursts (late events), impossible travel, coordinates,
    compromised terminals and their delayed labels."""
    tx, labels = load_simulated("sim:20000?seed=9&cards=1000&terminals=2000")
    client = aioredis.Redis.from_url(redis_url)
    try:
        result = await run_parity(client, tx, labels, batch_size=2000)
    finally:
        await client.aclose()
    assert result.rows == 20_000 and labels["is_fraud"].sum() > 100
    assert result.max_rel_diff <= TOLERANCE, result


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get(FDH_ENV), reason=f"set {FDH_ENV} to the fdh Parquet file to run this test "
                    "of the fdh format")
async def test_fdh_format_slice_parity(redis_url: str) -> None:
    """The handbook's own file through ``load_fdh`` (UTC times, decimal ids, labels 7 days later)."""
    tx, labels = load_fdh(os.environ[FDH_ENV], limit=20_000)
    client = aioredis.Redis.from_url(redis_url)
    try:
        result = await run_parity(client, tx, labels, batch_size=2000)
    finally:
        await client.aclose()
    assert result.rows == 20_000
    assert result.max_rel_diff <= TOLERANCE, result


@pytest.mark.parametrize(
    "ids",
    [
        ["3", "1", "2"],
        ["1", "2", "1"],
        ["01", "1", "001"],
        ["x", "1", "x"],
        ["7", None, "8"],
        [5, 3, 5],
        [5, 3, 4],
    ],
)
def test_offline_repeated_ids_match_pandas(ids: list[object]) -> None:
    col = pd.Series(ids, dtype="str") if isinstance(ids[0], str) else pd.Series(ids)
    assert list(_repeated(col)) == list(col.duplicated())


async def test_counterparty_fields_are_trimmed_by_last_sighting(redis_url: str) -> None:
    """Distinct counts stay exact and only live counterparty fields remain, far past the retention.

    One card at two terminals for 120 days (each seen every 4 days) and one terminal seen once; another
    card sees a terminal again just after that terminal's field came due, in a call that trims.
    """
    rows = [
        {
            "transaction_id": f"r{i}",
            "card_ref": "a",
            "terminal_id": "once" if i == 1 else ("t1" if i % 2 else "t2"),
            "event_time": T0 + i * 2 * DAY,
            "amount": 10.0 + i,
        }
        for i in range(60)
    ]
    # card b meets terminal "late" again just after its entry came due, in a call that trims
    for i, (day, terminal) in enumerate([(0, "late"), (31, "late"), (100, "x")]):
        rows.append(
            {
                "transaction_id": f"b{i}",
                "card_ref": "b",
                "terminal_id": terminal,
                "event_time": T0 + day * DAY,
                "amount": 5.0,
            }
        )
    tx = pd.DataFrame(rows)
    client = aioredis.Redis.from_url(redis_url)
    prefix = f"fscp:{uuid.uuid4().hex[:8]}"
    try:
        result = await run_parity(client, tx, None, batch_size=5, key_prefix=prefix)
        assert result.max_abs_diff == 0.0, result
        store = RedisFeatureStore(client, key_prefix=prefix)
        await store.apply_and_read(transaction_events(tx))
        s, x, _ = entity_keys(store.key_prefix, "card", "a")
        seen = sorted(f for f in await client.hkeys(s) if f.startswith(b"c:"))
        assert seen == [b"c:t1", b"c:t2"]
        assert sorted(m for m in await client.zrange(x, 0, -1) if m.startswith(b"c:")) == seen
        s, _, _ = entity_keys(store.key_prefix, "card", "b")
        assert sorted(f for f in await client.hkeys(s) if f.startswith(b"c:")) == [b"c:x"]
        await store.purge()
    finally:
        await client.aclose()
