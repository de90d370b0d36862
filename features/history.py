"""Historical files as the frames both engines read (``compute_offline`` and the replay/parity paths).

``--mapping fdh`` reads the Fraud Detection Handbook's simulated data (a file given with ``--input``):
TRANSACTION_ID → transaction_id (decimal string), CUSTOMER_ID → card_ref (its decimal string: hashing card ids is the
stream worker's job), TERMINAL_ID → terminal_id, TX_AMOUNT → amount, TX_DATETIME → event_time (read as
UTC), TX_FRAUD → a label available 7 days after the transaction. Terminals sit on the simulator's 100×100
grid; we place them at latitude 50 + y·0.01, longitude 4 + x·0.01 (about 110 km × 70 km around
Belgium), so geo velocity has real coordinates to work on. TX_FRAUD_SCENARIO is never read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.definitions import DAY
from features.errors import HistoryFormatError

FDH_LABEL_DELAY_S = 7 * DAY
FDH_COLUMNS = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]


def _utc_epoch_seconds(col: pd.Series) -> np.ndarray:
    ts = pd.to_datetime(col)
    ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    return ts.astype("int64").to_numpy() / 1e9


def load_fdh(path: str | Path, limit: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(transactions, labels) in event-time order; ``limit`` keeps the first N transactions.

    transactions: transaction_id, card_ref, terminal_id, event_time, amount, latitude, longitude.
    labels: transaction_id, card_ref, terminal_id, event_time, available_at, is_fraud.
    """
    path = Path(path)
    try:
        df = pd.read_parquet(path, columns=FDH_COLUMNS)
    except (OSError, ValueError, KeyError) as exc:
        msg = f"cannot read {path} as the fdh Parquet file: {exc}"
        raise HistoryFormatError(msg) from exc
    df = df.sort_values(["TX_DATETIME", "TRANSACTION_ID"], kind="stable")
    if limit is not None:
        df = df.head(limit)
    event_time = _utc_epoch_seconds(df["TX_DATETIME"])
    terminal = df["TERMINAL_ID"].to_numpy()
    lat = np.full(len(df), np.nan)
    lon = np.full(len(df), np.nan)
    coords_file = path.parent / "terminal_coordinates.csv"
    if coords_file.exists():
        coords = pd.read_csv(coords_file).set_index("TERMINAL_ID")
        pos = coords.index.get_indexer(pd.Index(terminal))
        found = pos >= 0
        lat[found] = 50.0 + coords["y_terminal_id"].to_numpy()[pos[found]] * 0.01
        lon[found] = 4.0 + coords["x_terminal_id"].to_numpy()[pos[found]] * 0.01
    tx = pd.DataFrame(
        {
            "transaction_id": df["TRANSACTION_ID"].astype(str).to_numpy(),
            "card_ref": df["CUSTOMER_ID"].astype(str).to_numpy(),
            "terminal_id": df["TERMINAL_ID"].astype(str).to_numpy(),
            "event_time": event_time,
            "amount": df["TX_AMOUNT"].to_numpy(dtype=np.float64),
            "latitude": lat,
            "longitude": lon,
        }
    )
    labels = pd.DataFrame(
        {
            "transaction_id": tx["transaction_id"].to_numpy(),
            "card_ref": tx["card_ref"].to_numpy(),
            "terminal_id": tx["terminal_id"].to_numpy(),
            "event_time": event_time,
            "available_at": event_time + FDH_LABEL_DELAY_S,
            "is_fraud": df["TX_FRAUD"].to_numpy() != 0,
        }
    )
    return tx, labels
