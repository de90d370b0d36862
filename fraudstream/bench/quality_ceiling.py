"""How high Card Precision@100 can go on the selection folds: scorers that know what no model can.

Reads the simulator's ``TX_FRAUD_SCENARIO`` (never a model input) to score each test fold of the handbook
protocol (``training.dataset.make_fold``'s card removal, ``training.metrics``) with oracles:

- ``perfect``: the label itself;
- ``attainable``: scenario 1 (amount > 220) and scenario 3 (compromised card) frauds flagged, scenario 2
  (compromised terminal) frauds only once a fraud label of that terminal is known (7 days after its
  first fraud), which is the most any scorer that obeys the label delay can know about them;
- ``attainable, card profile``: as ``attainable`` but scenario 3 ranked by the likelihood ratio of a
  5× amount under the card's true spending profile (mean and std of all its genuine amounts in the file),
  so both the compromised cards' ordinary amounts and genuine outliers are scored as a profile would;
- ``labels-only``: scenario 1 and known-terminal scenario 2 only (no card-level detection);
- ``attainable, per episode`` and ``labels-only, per episode``: the same, but a compromised terminal counts
  as known only while one of its frauds is both at least 7 days old (its label is out) and at most
  ``EPISODE_DAYS`` + 7 days old. A terminal compromised again after its first episode ended starts a new
  episode whose frauds no label yet reveals: ``terminal_known`` above (any fraud of the terminal at least
  7 days old, however long ago) counts those as detectable, which no scorer obeying the delay can do.

    .venv/bin/python -m fraudstream.bench.quality_ceiling \
        --input PATH/TO/fdh/transactions-2018-04-01_2018-07-31.parquet
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from training.metrics import card_precision_at_k

STARTS = ("2018-06-20", "2018-06-27", "2018-07-04", "2018-07-11")
# Compromised cards: 3 a day for 14 days among ~5,000, a third of their transactions: prior of a 5x row.
PRIOR_5X = 0.003
# A compromised terminal's frauds last 28 days in the handbook's simulator (scenario 2).
EPISODE_DAYS = 28


def latest_known_fraud_age_days(df: pd.DataFrame) -> np.ndarray:
    """Per row: days since the terminal's latest fraud whose label is out (at least 7 days old); NaN if none."""
    frauds = df.loc[df.TX_FRAUD == 1, ["TERMINAL_ID", "TX_DATETIME"]].rename(columns={"TX_DATETIME": "fraud_at"})
    rows = df[["TERMINAL_ID", "TX_DATETIME"]].assign(
        row=np.arange(len(df)), cut=df.TX_DATETIME - pd.Timedelta(days=7)
    )
    joined = pd.merge_asof(
        rows.sort_values("cut"),
        frauds.sort_values("fraud_at"),
        left_on="cut",
        right_on="fraud_at",
        by="TERMINAL_ID",
        direction="backward",
    )
    age = (joined.TX_DATETIME - joined.fraud_at).dt.total_seconds() / 86_400
    out = np.full(len(df), np.nan)
    out[joined.row.to_numpy()] = age.to_numpy()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True)
    args = parser.parse_args()
    df = pd.read_parquet(args.input).sort_values("TX_DATETIME", kind="stable").reset_index(drop=True)
    day = ((df.TX_DATETIME - pd.Timestamp("1970-01-01")).dt.days).to_numpy()
    y = df.TX_FRAUD.to_numpy()
    scenario = df.TX_FRAUD_SCENARIO.to_numpy()
    first_fraud = df[df.TX_FRAUD == 1].groupby("TERMINAL_ID").TX_DATETIME.min()
    since_first = (df.TX_DATETIME - df.TERMINAL_ID.map(first_fraud)).dt.total_seconds()
    terminal_known = (since_first >= 7 * 86_400).fillna(False).to_numpy()
    known_age = latest_known_fraud_age_days(df)
    terminal_known_episode = np.nan_to_num(known_age, nan=np.inf) <= EPISODE_DAYS + 7
    genuine = df[df.TX_FRAUD == 0].groupby("CUSTOMER_ID").TX_AMOUNT
    mu = df.CUSTOMER_ID.map(genuine.mean()).to_numpy()
    sd = df.CUSTOMER_ID.map(genuine.std()).to_numpy()
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, mu / 2)
    amount = df.TX_AMOUNT.to_numpy()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        log_lr = -0.5 * ((amount - 5 * mu) / (5 * sd)) ** 2 - np.log(5.0) + 0.5 * ((amount - mu) / sd) ** 2
        p_5x = np.nan_to_num(1.0 / (1.0 + np.exp(-(log_lr + np.log(PRIOR_5X)))), nan=0.0)
    cards_all = df.CUSTOMER_ID.to_numpy()
    result: dict[str, dict[str, float]] = {}
    for start in STARTS:
        s = (pd.Timestamp(start) - pd.Timestamp("1970-01-01")).days
        known = set(cards_all[(day >= s) & (day < s + 7) & (y == 1)])
        parts = []
        for offset in range(7):
            known |= set(cards_all[(day == s + 6 + offset) & (y == 1)])
            on_day = np.flatnonzero(day == s + 14 + offset)
            parts.append(on_day[~pd.Series(cards_all[on_day]).isin(known).to_numpy()])
        idx = np.concatenate(parts)
        sc, cards, days = scenario[idx], cards_all[idx], day[idx]
        labels_only = ((sc == 1) | ((sc == 2) & terminal_known[idx])).astype(float)
        labels_only_episode = ((sc == 1) | ((sc == 2) & terminal_known_episode[idx])).astype(float)
        scorers = {
            "perfect": y[idx].astype(float),
            "attainable": np.maximum(labels_only, (sc == 3).astype(float)),
            "attainable, card profile": np.maximum(labels_only, 0.98 * p_5x[idx]),
            "labels-only": labels_only,
            "attainable, per episode": np.maximum(labels_only_episode, (sc == 3).astype(float)),
            "labels-only, per episode": labels_only_episode,
        }
        result[start] = {k: round(card_precision_at_k(cards, days, y[idx], v), 4) for k, v in scorers.items()}
    result["mean"] = {k: round(float(np.mean([result[s][k] for s in STARTS])), 4) for k in result[STARTS[0]]}
    result["std"] = {k: round(float(np.std([result[s][k] for s in STARTS], ddof=1)), 4) for k in result[STARTS[0]]}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
