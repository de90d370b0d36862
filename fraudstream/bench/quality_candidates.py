"""Candidate feature lists for ``python -m fraudstream.bench.quality_lab --features NAME``.

``v1`` is the list before #22's spending baselines (the A/B's other side); ``episode`` adds label risk four
weeks back to the default (tried for #22, not kept: docs/benchmarks.md).
"""

from __future__ import annotations

from features import FEATURE_LIST
from features.definitions import DAY, FEATURE_LIST_V1, W7D, W28D, DelayedLabelRisk, FeatureList

V1_FEATURES = FEATURE_LIST_V1

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
