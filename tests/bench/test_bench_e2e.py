"""How ``bench e2e`` measures latency: its measured transactions follow the warm-up in event time (as live
traffic does, so none reaches the feature state as a late event merely because of how the benchmark drew
its data), and the process that timestamps records runs without cyclic-GC pauses."""

from __future__ import annotations

import gc
from datetime import datetime

import orjson
import pytest

from fraudstream.bench_e2e import no_collector_pauses, warm_and_measured


def _event_times(items: list[tuple[bytes, bytes]]) -> list[datetime]:
    return [datetime.fromisoformat(orjson.loads(value)["event_time"]) for _, value in items]


def test_the_measured_transactions_follow_the_warm_up_in_event_time() -> None:
    warm, measured = warm_and_measured(2_000, 3_000, seed=7, prefix="t")

    assert (len(warm), len(measured)) == (2_000, 3_000)
    assert max(_event_times(warm)) <= min(_event_times(measured))
    ids = [orjson.loads(value)["transaction_id"] for _, value in warm + measured]
    assert len(set(ids)) == len(ids)


def test_the_collector_is_off_while_measuring_and_back_on_after_an_error() -> None:
    assert gc.isenabled()
    with no_collector_pauses():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), no_collector_pauses():
        raise RuntimeError("phase failed")
    assert gc.isenabled()
