"""The per-episode oracle's notion of a known terminal: a fraud of its own at least 7 days old (label out)
and at most 35 days old (28-day episode + delay); a terminal compromised again long after is not known."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraudstream.bench.quality_ceiling import EPISODE_DAYS, latest_known_fraud_age_days


def test_known_fraud_age_counts_only_labels_that_are_out() -> None:
    t0 = pd.Timestamp("2018-04-01")
    days = [0, 3, 8, 20, 60, 61, 70]
    df = pd.DataFrame({
        "TERMINAL_ID": [1, 1, 1, 1, 1, 2, 1],
        "TX_DATETIME": [t0 + pd.Timedelta(days=d) for d in days],
        "TX_FRAUD": [1, 0, 0, 0, 1, 0, 0],
    })
    age = latest_known_fraud_age_days(df)
    assert np.isnan(age[1])  # 3 days after the fraud: its label is not out yet
    assert age[2] == 8 and age[3] == 20  # the day-0 fraud, labelled from day 7
    assert age[4] == 60 > EPISODE_DAYS + 7  # a new fraud 60 days on: only the old episode is known
    assert np.isnan(age[5])  # another terminal has none
    assert age[6] == 10  # the day-60 fraud's label is out from day 67: the new episode is known now
