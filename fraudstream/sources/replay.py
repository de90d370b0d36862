"""Historical rows → ``transactions`` and ``fraud-labels`` in event-time order: each label is sent at the
moment it became known (``available_at``), before any transaction at or after that instant."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import orjson
import pandas as pd

from config.settings import Topics
from features.history import load_fdh
from fraudstream.sources.producer import OutboundRecord


def _iso(epochs: np.ndarray) -> list[str]:
    # Rounded to the microsecond the schema keeps: float seconds to nanoseconds can land a hair below a
    # microsecond boundary, and the reader would truncate it to the microsecond before.
    stamps = pd.to_datetime(np.round(np.asarray(epochs, dtype=np.float64) * 1e6).astype(np.int64), unit="us", utc=True)
    return [s.isoformat().replace("+00:00", "Z") for s in stamps]


def _window(df: pd.DataFrame, column: str, start: str | None, days: float | None) -> pd.DataFrame:
    if start is None and days is None:
        return df
    first = (datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp() if start
             else float(df["event_time"].min()))
    last = first + (days * 86_400 if days is not None else float("inf"))
    return df[(df[column] >= first) & (df[column] < last)]


def replay_records(
    path: str, topics: Topics, *, limit: int | None = None, start: str | None = None, days: float | None = None,
    id_prefix: str = "",
) -> Iterator[OutboundRecord]:
    """The file's rows as records; with ``id_prefix`` P every transaction id (and its label's) becomes
    ``P-<id>``, so replaying the same rows again in another run is new traffic, not a repeat."""
    transactions, labels = load_fdh(path)
    transactions = _window(transactions, "event_time", start, days)
    if limit is not None:
        transactions = transactions.iloc[:limit]
    if id_prefix:
        transactions = transactions.assign(transaction_id=id_prefix + "-" + transactions["transaction_id"].astype(str))
        labels = labels.assign(transaction_id=id_prefix + "-" + labels["transaction_id"].astype(str))
    return replay_frames(transactions, labels, topics)


def replay_frames(transactions: pd.DataFrame, labels: pd.DataFrame, topics: Topics) -> Iterator[OutboundRecord]:
    """Transactions and the labels known by the last transaction's time, merged in time order."""
    if transactions.empty:
        return
    end = float(transactions["event_time"].max())
    labels = labels[labels["transaction_id"].isin(set(transactions["transaction_id"]))]
    labels = labels[labels["available_at"] <= end]
    yield from _merged(transactions, labels, topics)


def _merged(transactions: pd.DataFrame, labels: pd.DataFrame, topics: Topics) -> Iterator[OutboundRecord]:
    tx_times = transactions["event_time"].to_numpy(dtype=np.float64)
    label_times = labels["available_at"].to_numpy(dtype=np.float64)
    # Stable merge by time; at equal times a label goes first (it is known "at" that instant).
    times = np.concatenate([label_times, tx_times])
    kinds = np.concatenate([np.zeros(len(label_times), np.int8), np.ones(len(tx_times), np.int8)])
    order = np.lexsort((kinds, times))
    tx_rows = _transaction_payloads(transactions)
    label_rows = _label_payloads(labels)
    n_labels = len(label_rows)
    for index in order:
        if index < n_labels:
            key, value = label_rows[index]
            yield OutboundRecord(topics.labels, key, value, counts_as_transaction=False)
        else:
            key, value = tx_rows[index - n_labels]
            yield OutboundRecord(topics.transactions, key, value)


def transaction_records(transactions: pd.DataFrame, topic: str) -> list[OutboundRecord]:
    return [OutboundRecord(topic, key, value) for key, value in _transaction_payloads(transactions)]


def label_records(labels: pd.DataFrame, topic: str) -> list[OutboundRecord]:
    return [OutboundRecord(topic, key, value, counts_as_transaction=False) for key, value in _label_payloads(labels)]


def _transaction_payloads(df: pd.DataFrame) -> list[tuple[bytes, bytes]]:
    rows = []
    has_geo = "latitude" in df.columns
    lat = df["latitude"].to_numpy() if has_geo else np.full(len(df), np.nan)
    lon = df["longitude"].to_numpy() if has_geo else np.full(len(df), np.nan)
    for tx, card, terminal, amount, when, la, lo in zip(
        df["transaction_id"], df["card_ref"], df["terminal_id"], df["amount"], _iso(df["event_time"].to_numpy()),
        lat, lon, strict=True,
    ):
        payload: dict[str, object] = {
            "transaction_id": str(tx), "card_id": str(card), "terminal_id": str(terminal),
            "amount": float(amount), "currency": "EUR", "event_time": when,
        }
        if not np.isnan(la):
            payload["latitude"] = float(la)
            payload["longitude"] = float(lo)
        rows.append((str(card).encode(), orjson.dumps(payload)))
    return rows


def _label_payloads(df: pd.DataFrame) -> list[tuple[bytes, bytes]]:
    rows = []
    for tx, card, terminal, when, available, fraud in zip(
        df["transaction_id"], df["card_ref"], df["terminal_id"], _iso(df["event_time"].to_numpy()),
        _iso(df["available_at"].to_numpy()), df["is_fraud"], strict=True,
    ):
        payload = {
            "transaction_id": str(tx), "card_id": str(card), "terminal_id": str(terminal), "event_time": when,
            "available_at": available, "is_fraud": bool(fraud), "source": "replay",
        }
        rows.append((str(card).encode(), orjson.dumps(payload)))
    return rows


