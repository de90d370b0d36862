"""`evaluate --via stream` replays enough history for the longest (delayed) window: with less, the first test
rows' features miss days that the offline engine saw over the whole file, and the two paths disagree."""

from __future__ import annotations

from features import FEATURE_LIST
from features.definitions import DAY, FEATURE_LIST_V1
from fraudstream.evaluation import LOOKBACK_MARGIN_DAYS, lookback_days


def _reach_days(features: object) -> int:
    reach = 0
    for f in features:  # type: ignore[attr-defined]
        window = getattr(f, "window", None)
        if window is not None:
            reach = max(reach, window.length_s + getattr(f, "delay_s", 0))
    return -(-reach // DAY)


def test_the_replay_covers_every_window_of_the_list() -> None:
    assert _reach_days(FEATURE_LIST) == 44  # a 30-day baseline ending 14 days back
    assert lookback_days() == 44 + LOOKBACK_MARGIN_DAYS
    assert lookback_days() - LOOKBACK_MARGIN_DAYS >= _reach_days(FEATURE_LIST)


def test_the_v1_list_keeps_its_forty_days() -> None:
    assert lookback_days(FEATURE_LIST_V1) == 40 == _reach_days(FEATURE_LIST_V1) + LOOKBACK_MARGIN_DAYS
