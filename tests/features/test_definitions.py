from __future__ import annotations

from pathlib import Path

import pytest

from features import FEATURE_LIST
from features.catalogue import render_catalogue
from features.definitions import (
    DAY,
    FEATURE_LIST_V1,
    HOUR,
    W1D,
    W7D,
    W28D,
    W30D,
    AmountVsHistory,
    DelayedLabelRisk,
    FeatureList,
    Window,
    WindowedAggregate,
)
from features.errors import FeatureDefinitionError
from features.online import entity_keys
from features.plan import compile_plan

# Changing a definition changes this hash: exported models record it, so update it deliberately.
PINNED_HASH = "c957784374878a8d7f5ece62b2fdcd690bf808ab818ef3200165efe4e0dc53a6"
# The list before #22's spending baselines: models exported on it record this hash.
PINNED_V1_HASH = "391db72a1af85b8297ebd746abf0d5acd4ba89e9a6fb9cfd88e175fc15b740f8"


def test_hash_is_pinned_and_stable() -> None:
    assert FEATURE_LIST.hash == PINNED_HASH
    assert FEATURE_LIST_V1.hash == PINNED_V1_HASH
    assert FEATURE_LIST.features[: len(FEATURE_LIST_V1)] == FEATURE_LIST_V1.features
    assert len(FEATURE_LIST.hash) == 64
    rebuilt = FeatureList(name=FEATURE_LIST.name, features=tuple(FEATURE_LIST.features))
    assert rebuilt.hash == FEATURE_LIST.hash


def test_hash_covers_order_and_content() -> None:
    swapped = FeatureList(name=FEATURE_LIST.name, features=FEATURE_LIST.features[::-1])
    assert swapped.hash != FEATURE_LIST.hash
    renamed = FeatureList(name="other", features=FEATURE_LIST.features)
    assert renamed.hash != FEATURE_LIST.hash


def test_names_order_and_size() -> None:
    names = FEATURE_LIST.names
    assert names[:4] == ("amount", "tx_hour", "tx_is_night", "tx_is_weekend")
    assert 40 <= len(FEATURE_LIST) <= 70
    assert len(set(names)) == len(names)


def test_handbook_inputs_are_present() -> None:
    names = set(FEATURE_LIST.names)
    for w in ("1d", "7d", "30d"):
        assert {f"card_count_{w}", f"card_mean_{w}"} <= names
        assert {f"terminal_delayed_tx_count_{w}", f"terminal_delayed_fraud_rate_{w}"} <= names
    assert {"amount", "tx_is_weekend", "tx_is_night"} <= names


def test_definitions_validate() -> None:
    with pytest.raises(FeatureDefinitionError):
        Window(name="bad", length_s=100, tile_s=60)
    f = WindowedAggregate(entity="card", agg="count", window=W1D)
    with pytest.raises(FeatureDefinitionError):
        FeatureList(name="dupes", features=(f, f))
    with pytest.raises(TypeError):
        WindowedAggregate("card", "count", W1D)  # type: ignore[misc]


def test_delayed_amount_windows_validate_and_name_themselves() -> None:
    mean = WindowedAggregate(entity="card", agg="mean", window=W30D, delay_s=7 * DAY)
    assert mean.name == "card_mean_30d_delay7d"
    assert mean.delay_tiles == 7
    ratio = AmountVsHistory(entity="card", stat="ratio", window=W1D, delay_s=3 * HOUR)
    assert ratio.name == "card_amount_ratio_1d_delay10800s"
    with pytest.raises(FeatureDefinitionError, match="whole number of tiles"):
        WindowedAggregate(entity="card", agg="sum", window=W7D, delay_s=HOUR)
    with pytest.raises(FeatureDefinitionError, match="undelayed windows only"):
        WindowedAggregate(entity="card", agg="max", window=W7D, delay_s=DAY)


def test_label_risk_names_a_delay_other_than_the_handbooks() -> None:
    """The 7-day delay keeps the names models were trained on; another delay is named, so both can coexist."""
    handbook = DelayedLabelRisk(entity="terminal", stat="fraud_count", window=W7D)
    assert handbook.name == "terminal_delayed_fraud_count_7d"
    episode = DelayedLabelRisk(entity="terminal", stat="fraud_count", window=W28D, delay_s=28 * DAY)
    assert episode.name == "terminal_delayed_fraud_count_28d_delay28d"
    assert compile_plan(FeatureList(name="x", features=(episode,))).entities[0].ring[0] == 56
    both = (episode, DelayedLabelRisk(entity="terminal", stat="fraud_count", window=W28D))
    assert len(FeatureList(name="x", features=both).names) == 2


def test_undelayed_windows_hash_as_before_the_delay_existed() -> None:
    """A zero delay is left out of the canonical JSON: lists without delayed windows keep their hash."""
    plain = FeatureList(name="x", features=(WindowedAggregate(entity="card", agg="count", window=W1D),))
    assert '"delay_s"' not in plain.canonical_json()
    delayed = FeatureList(
        name="x", features=(WindowedAggregate(entity="card", agg="count", window=W1D, delay_s=DAY),)
    )
    assert '"delay_s":86400' in delayed.canonical_json()


def test_plan_rings_cover_the_delayed_amount_windows() -> None:
    features = FeatureList(
        name="x",
        features=(
            WindowedAggregate(entity="card", agg="count", window=W30D),
            AmountVsHistory(entity="card", stat="zscore", window=W30D, delay_s=14 * DAY),
        ),
    )
    card = compile_plan(features).entities[0]
    assert card.ring[card.tile_s.index(86_400)] == 44
    assert {(w.tiles, w.delay) for w in card.windows} == {(30, 0), (30, 14)}


def test_plan_rings_cover_the_delayed_windows() -> None:
    plan = compile_plan(FEATURE_LIST)
    terminal = next(ep for ep in plan.entities if ep.entity == "terminal")
    day_level = terminal.tile_s.index(86_400)
    assert terminal.ring[day_level] == 37  # 30-day window ending 7 days back, current tile included


def test_redis_key_bytes_are_pinned() -> None:
    assert entity_keys("fs", "card", "ab12") == ("fs:{c:ab12}:s", "fs:{c:ab12}:x", "fs:{c:ab12}:l")
    assert entity_keys("fs", "terminal", "T9")[0] == "fs:{t:T9}:s"


def test_catalogue_is_up_to_date() -> None:
    path = Path(__file__).resolve().parents[2] / "docs" / "features.md"
    assert path.read_text() == render_catalogue(), "run: python -m features.catalogue > docs/features.md"
