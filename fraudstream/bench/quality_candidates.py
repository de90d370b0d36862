"""Candidate features for ``fraudstream/bench/quality_lab.py --features lab``: the default list plus what is A/B'd."""

from __future__ import annotations

from features import FEATURE_LIST
from features.definitions import (
    DAY,
    W1D,
    W7D,
    W28D,
    W30D,
    AmountVsHistory,
    DelayedLabelRisk,
    FeatureList,
    WindowedAggregate,
)

LAB_FEATURES = FeatureList(
    name="fraudstream_lab",
    features=(
        *FEATURE_LIST.features,
        *(AmountVsHistory(entity="card", stat=s, window=w) for w in (W1D, W7D) for s in ("ratio", "zscore")),
        *(AmountVsHistory(entity="card", stat=s, window=W30D, delay_s=7 * DAY) for s in ("ratio", "zscore")),
        *(WindowedAggregate(entity="card", agg=a, window=W30D, delay_s=7 * DAY) for a in ("count", "mean", "std")),
        *(AmountVsHistory(entity="card", stat=s, window=W30D, delay_s=14 * DAY) for s in ("ratio", "zscore")),
        *(AmountVsHistory(entity="terminal", stat="ratio", window=w) for w in (W1D, W7D)),
    ),
)

# Terminal compromise episodes end: frauds known from 4 weeks back say an episode began long ago.
EPISODE_FEATURES = FeatureList(
    name="fraudstream_episode",
    features=(
        *FEATURE_LIST.features,
        *(
            DelayedLabelRisk(entity="terminal", stat=s, window=W28D, delay_s=28 * DAY)
            for s in ("fraud_count", "fraud_rate")
        ),
        DelayedLabelRisk(entity="terminal", stat="fraud_count", window=W7D, delay_s=21 * DAY),
    ),
)
