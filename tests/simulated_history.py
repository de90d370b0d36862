"""A history file in the fdh format made by the project's own simulator, so tests of ``--mapping fdh``
commands run on a bare clone (no ../shared beside it). Zero amounts are planted on purpose."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from features.simulator import SimulationConfig, Simulator

END = datetime(2026, 3, 1, tzinfo=UTC)


def simulated_fdh(path: Path, *, days: int = 40, cards: int = 150, seed: int = 3, zero_share: float = 0.01
                  ) -> pd.DataFrame:
    """Write ``days`` days of simulated traffic ending at 2026-03-01 as an fdh Parquet file; about
    ``zero_share`` of the transactions get amount 0.0 (account verifications). Returns the frame written."""
    count = days * cards * 2  # the simulator's cards make two transactions a day on average
    simulator = Simulator(SimulationConfig(count=count, seed=seed, cards=cards, terminals=2 * cards, end=END))
    rows = [(tx.payload, tx.is_fraud, tx.event_time) for tx in simulator.transactions()]
    rng = np.random.default_rng(seed)
    amount = np.array([float(p["amount"]) for p, _, _ in rows])  # type: ignore[arg-type]
    amount[rng.random(len(rows)) < zero_share] = 0.0
    frame = pd.DataFrame({
        "TRANSACTION_ID": np.arange(len(rows), dtype=np.int64),
        "TX_DATETIME": pd.to_datetime([t for _, _, t in rows], unit="s"),  # naive UTC, as the fdh file has it
        "CUSTOMER_ID": [int(str(p["card_id"]).removeprefix("card-")) for p, _, _ in rows],
        "TERMINAL_ID": [int(str(p["terminal_id"]).removeprefix("term-")) for p, _, _ in rows],
        "TX_AMOUNT": amount,
        "TX_FRAUD": np.array([int(f) for _, f, _ in rows], dtype=np.int64),
    }).sort_values("TX_DATETIME", kind="stable")
    frame.to_parquet(path, index=False)
    return frame


def fold_starts(frame: pd.DataFrame, folds: int) -> list[date]:
    """Training starts of ``folds`` weekly handbook folds (7 train, 7 gap, 7 test days) at the end of the
    history, with at least 10 days of history before the first."""
    last = frame["TX_DATETIME"].max().date()
    first_possible = frame["TX_DATETIME"].min().date() + timedelta(days=10)
    starts = [last - timedelta(days=21 + 7 * k) for k in range(folds)][::-1]
    assert starts[0] >= first_possible, "the simulated history is too short for that many folds"
    return starts
