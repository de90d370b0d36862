"""``bench e2e`` offers its measured transactions after a warm-up from the same simulated stream: every
measured transaction is newer than the warm-up's, as live traffic is, so none reaches the feature state as
a late event merely because of how the benchmark drew its data."""

from __future__ import annotations

from datetime import datetime

import orjson

from fraudstream.bench_e2e import warm_and_measured


def _event_times(items: list[tuple[bytes, bytes]]) -> list[datetime]:
    return [datetime.fromisoformat(orjson.loads(value)["event_time"]) for _, value in items]


def test_the_measured_transactions_follow_the_warm_up_in_event_time() -> None:
    warm, measured = warm_and_measured(2_000, 3_000, seed=7, prefix="t")

    assert (len(warm), len(measured)) == (2_000, 3_000)
    warm_times, measured_times = _event_times(warm), _event_times(measured)
    assert max(warm_times) <= min(measured_times)
    ids = [orjson.loads(value)["transaction_id"] for _, value in warm + measured]
    assert len(set(ids)) == len(ids)
