"""Parity: the same history through the online engine (a real Redis) and the offline engine.

Online, transactions are applied in arrival order in micro-batches; before each batch every label whose
``available_at`` is at or before the latest event time seen so far is applied (in ``available_at`` order),
so a label is in Redis before any transaction that may count it. Offline counts a label from its
``available_at`` on, which is the same rule. Differences are relative: |a - b| / max(1, |a|, |b|).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from features.definitions import FEATURE_LIST, FeatureList
from features.events import LabelEvent, TransactionEvent
from features.offline import compute_offline, prepare_labels
from features.online import RedisFeatureStore

TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class ParityResult:
    rows: int
    max_abs_diff: float
    max_rel_diff: float
    worst_feature: str
    worst_row: int
    online_s: float
    offline_s: float

    @property
    def ok(self) -> bool:
        return self.max_rel_diff <= TOLERANCE

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "worst_feature": self.worst_feature,
            "worst_row": self.worst_row,
            "tolerance": TOLERANCE,
            "online_seconds": round(self.online_s, 3),
            "offline_seconds": round(self.offline_s, 3),
            "online_tx_per_s": round(self.rows / self.online_s, 1) if self.online_s else None,
            "offline_rows_per_s": round(self.rows / self.offline_s, 1) if self.offline_s else None,
        }


def transaction_events(transactions: pd.DataFrame) -> list[TransactionEvent]:
    n = len(transactions)
    nan = np.full(n, np.nan)
    lat = transactions["latitude"].to_numpy(dtype=np.float64) if "latitude" in transactions else nan
    lon = transactions["longitude"].to_numpy(dtype=np.float64) if "longitude" in transactions else nan
    return [
        TransactionEvent(
            transaction_id=tx,
            card_ref=card,
            terminal_id=term,
            event_time=t,
            amount=a,
            latitude=None if la != la else la,  # NaN = no coordinates
            longitude=None if lo != lo else lo,
        )
        for tx, card, term, t, a, la, lo in zip(
            transactions["transaction_id"].astype(str).tolist(),
            transactions["card_ref"].astype(str).tolist(),
            transactions["terminal_id"].astype(str).tolist(),
            transactions["event_time"].astype(float).tolist(),
            transactions["amount"].astype(float).tolist(),
            lat.tolist(),
            lon.tolist(),
            strict=True,
        )
    ]


def label_events(labels: pd.DataFrame | None) -> list[LabelEvent]:
    prepared = prepare_labels(labels)
    if prepared is None:
        return []
    card = prepared["card_ref"] if "card_ref" in prepared else prepared["terminal_id"]
    return [
        LabelEvent(transaction_id=tx, card_ref=c, terminal_id=term, event_time=t, available_at=a, is_fraud=True)
        for tx, c, term, t, a in zip(
            prepared["transaction_id"].astype(str).tolist(),
            card.astype(str).tolist(),
            prepared["terminal_id"].astype(str).tolist(),
            prepared["event_time"].astype(float).tolist(),
            prepared["available_at"].astype(float).tolist(),
            strict=True,
        )
    ]


async def compute_online(
    store: RedisFeatureStore,
    transactions: pd.DataFrame,
    labels: pd.DataFrame | None,
    *,
    batch_size: int = 2000,
    progress: Callable[[int, int], None] | None = None,
) -> npt.NDArray[np.float64]:
    """Feed the history to ``store`` as the stream would, returning the vectors in row order."""
    out = await apply_history(store, transaction_events(transactions), label_events(labels), batch_size=batch_size,
                              keep=True, progress=progress)
    assert out is not None
    return out


async def apply_history(
    store: RedisFeatureStore, events: list[TransactionEvent], labels: list[LabelEvent], *, batch_size: int,
    keep: bool, progress: Callable[[int, int], None] | None = None,
) -> npt.NDArray[np.float64] | None:
    """Apply a history (transactions in arrival order, labels by ``available_at``) through the online
    engine, in batches, as the stream would: each batch after the labels available by its newest event
    time; with ``keep``, return every transaction's feature vector (row order). Used by parity, ``features
    rebuild`` and the warm-up."""
    out = np.zeros((len(events), len(store.features)), dtype=np.float64) if keep else None
    li = 0
    horizon = -np.inf
    for start in range(0, len(events), batch_size):
        batch = events[start : start + batch_size]
        horizon = max(horizon, max(e.event_time for e in batch))
        lj = li
        while lj < len(labels) and labels[lj].available_at <= horizon:
            lj += 1
        if lj > li:
            await store.apply_labels(labels[li:lj])
            li = lj
        vectors = await store.apply_and_read(batch)
        if out is not None:
            out[start : start + len(batch)] = vectors
        if progress is not None:
            progress(start + len(batch), len(events))
    if li < len(labels):  # labels known after the last transaction still belong in the state
        await store.apply_labels(labels[li:])
    return out


def compare(
    online: npt.NDArray[np.float64], offline: npt.NDArray[np.float64], names: tuple[str, ...]
) -> tuple[float, float, str, int]:
    """(max abs diff, max rel diff, worst feature, worst row); NaN anywhere counts as infinite."""
    if online.size == 0:
        return 0.0, 0.0, "", -1
    absdiff = np.abs(online - offline)
    rel = absdiff / np.maximum(1.0, np.maximum(np.abs(online), np.abs(offline)))
    rel = np.where(np.isnan(rel), np.inf, rel)
    absdiff = np.where(np.isnan(absdiff), np.inf, absdiff)
    row, col = np.unravel_index(int(np.argmax(rel)), rel.shape)
    return float(absdiff.max()), float(rel[row, col]), names[col], int(row)


async def run_parity(
    redis_client: aioredis.Redis | RedisCluster,
    transactions: pd.DataFrame,
    labels: pd.DataFrame | None,
    *,
    features: FeatureList = FEATURE_LIST,
    batch_size: int = 2000,
    key_prefix: str | None = None,
    dedup_horizon_s: float = 86_400.0,
    progress: Callable[[int, int], None] | None = None,
) -> ParityResult:
    """Both engines on the same history; the online run uses its own key prefix and deletes it after.

    Offline, a repeated transaction id always repeats the first vector; online only within
    ``dedup_horizon_s``: histories with older repeats need a longer horizon to compare.
    """
    prefix = key_prefix or f"fsparity:{uuid.uuid4().hex[:12]}"
    store = RedisFeatureStore(redis_client, features=features, key_prefix=prefix, dedup_horizon_s=dedup_horizon_s)
    try:
        await store.load_scripts()
        t0 = time.perf_counter()
        online = await compute_online(store, transactions, labels, batch_size=batch_size, progress=progress)
        t1 = time.perf_counter()
    finally:
        await store.purge()
        await store.close()
    t2 = time.perf_counter()
    offline = compute_offline(transactions, labels, features=features)
    t3 = time.perf_counter()
    max_abs, max_rel, worst, row = compare(online, offline, features.names)
    return ParityResult(
        rows=len(transactions),
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        worst_feature=worst,
        worst_row=row,
        online_s=t1 - t0,
        offline_s=t3 - t2,
    )
