"""Point-in-time training sets: history → offline features (once) → handbook folds → ``tf.data``.

The offline engine of ``features/`` computes every transaction's feature vector once over the whole
history, using each label only from its ``available_at``; folds are then index slices of that matrix, so
no fold can see a label earlier than the stream would have. The target ``y`` of a transaction is its final
label, which the trainer may use because the 7-day gap between the training and test windows is the
label delay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.errors import DatasetError

DAY_S = 86_400.0
MODEL_SELECTION_STARTS: tuple[date, ...] = (
    date(2018, 6, 20),
    date(2018, 6, 27),
    date(2018, 7, 4),
    date(2018, 7, 11),
)

OfflineCompute = Callable[[pd.DataFrame, pd.DataFrame], npt.NDArray[np.float64]]
Loader = Callable[[Path, int | None], tuple[pd.DataFrame, pd.DataFrame]]


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """The feature list a model is trained on, and the offline function that computes it."""

    name: str
    names: tuple[str, ...]
    hash: str
    compute: OfflineCompute = field(repr=False)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "names": list(self.names), "hash": self.hash}


def default_feature_spec() -> FeatureSpec:
    """The project's feature list (``features.FEATURE_LIST``) with its vectorised offline engine."""
    # Imported here, not at module level, so the metrics, registry and CLI parsing work without pulling
    # in the feature engine (and so tests can pass a stand-in spec).
    from features import FEATURE_LIST
    from features.offline import compute_offline

    return FeatureSpec(
        name=str(FEATURE_LIST.name),
        names=tuple(str(n) for n in FEATURE_LIST.names),
        hash=str(FEATURE_LIST.hash),
        compute=lambda transactions, labels: compute_offline(transactions, labels),
    )


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """How a Parquet/CSV history's columns map onto transactions and delayed labels."""

    transaction_id: str
    card: str
    terminal: str
    event_time: str
    amount: str
    label: str
    label_delay_s: float = 7 * DAY_S
    latitude: str | None = None
    longitude: str | None = None


def _read_table(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    if not path.exists():
        msg = f"history file {path} does not exist"
        raise DatasetError(msg)
    if path.suffix in {".parquet", ".pq"}:
        return pd.read_parquet(path, columns=columns)
    if path.suffix in {".csv", ".gz"}:
        return pd.read_csv(path, usecols=columns)
    msg = f"history file {path} is neither Parquet nor CSV"
    raise DatasetError(msg)


def _epoch_seconds(values: pd.Series) -> npt.NDArray[np.float64]:
    if pd.api.types.is_numeric_dtype(values):
        return np.asarray(values.to_numpy(dtype=np.float64), dtype=np.float64)
    stamps = pd.to_datetime(values)
    # A naive timestamp in a history file is read as UTC (the fdh convention in DESIGN.md), never as the
    # machine's local time.
    stamps = stamps.dt.tz_localize(UTC) if stamps.dt.tz is None else stamps.dt.tz_convert(UTC)
    # total_seconds, not astype(int64): the unit (ns, us) depends on the pandas version and the file.
    seconds = (stamps - pd.Timestamp(0, tz=UTC)).dt.total_seconds()
    return np.asarray(seconds.to_numpy(dtype=np.float64), dtype=np.float64)


def load_mapped(path: Path, mapping: ColumnMapping, limit: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Transactions and labels frames (the ``load_fdh`` columns) from any mapped Parquet/CSV file."""
    raw = _read_table(path)
    missing = [
        c
        for c in (
            mapping.transaction_id,
            mapping.card,
            mapping.terminal,
            mapping.event_time,
            mapping.amount,
            mapping.label,
        )
        if c not in raw.columns
    ]
    if missing:
        msg = f"{path} lacks mapped columns {missing}"
        raise DatasetError(msg)
    event_time = _epoch_seconds(raw[mapping.event_time])
    order = np.argsort(event_time, kind="stable")
    raw = raw.iloc[order].reset_index(drop=True)
    event_time = event_time[order]
    if limit is not None:
        raw, event_time = raw.iloc[:limit], event_time[:limit]
    nan = np.full(len(raw), np.nan)
    tx = pd.DataFrame(
        {
            "transaction_id": raw[mapping.transaction_id].astype(str).to_numpy(),
            "card_ref": raw[mapping.card].astype(str).to_numpy(),
            "terminal_id": raw[mapping.terminal].astype(str).to_numpy(),
            "event_time": event_time,
            "amount": raw[mapping.amount].to_numpy(dtype=np.float64),
            "latitude": raw[mapping.latitude].to_numpy(np.float64) if mapping.latitude else nan,
            "longitude": raw[mapping.longitude].to_numpy(np.float64) if mapping.longitude else nan,
        }
    )
    labels = tx[["transaction_id", "card_ref", "terminal_id", "event_time"]].copy()
    labels["available_at"] = event_time + mapping.label_delay_s
    labels["is_fraud"] = raw[mapping.label].to_numpy().astype(bool)
    return tx, labels


def load_history(
    path: Path, mapping: Literal["fdh"] | ColumnMapping = "fdh", limit: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a history file (or, for ``kafka://host:port``, the topics; for ``sim:N``, the simulator) into
    ``(transactions, labels)``."""
    from training.simulated import is_simulated_source, load_simulated
    from training.topics import is_topic_source, load_topics

    if is_simulated_source(path):
        return load_simulated(str(path), limit, progress=progress)
    if is_topic_source(path):
        return load_topics(str(path), limit=limit)
    if mapping == "fdh":
        from features.errors import FeatureError
        from features.history import load_fdh

        if not Path(path).exists():
            msg = f"history file {path} does not exist"
            raise DatasetError(msg)
        try:
            transactions, labels = load_fdh(path, limit=limit)
        except FeatureError as exc:
            raise DatasetError(str(exc)) from exc
        return transactions, labels
    if isinstance(mapping, ColumnMapping):
        return load_mapped(path, mapping, limit)
    msg = f"unknown mapping {mapping!r}; use 'fdh' or a ColumnMapping"
    raise DatasetError(msg)


@dataclass(frozen=True)
class History:
    """A whole history with its offline features, computed once."""

    transactions: pd.DataFrame
    features: npt.NDArray[np.float64]
    y: npt.NDArray[np.int8]
    """Final label of each transaction (the training target, never a model input)."""
    day: npt.NDArray[np.int64]
    """UTC day number (days since 1970-01-01) of each transaction."""
    spec: FeatureSpec

    @property
    def cards(self) -> npt.NDArray[np.object_]:
        return self.transactions["card_ref"].to_numpy()


def build_history(transactions: pd.DataFrame, labels: pd.DataFrame, spec: FeatureSpec) -> History:
    """Offline features over the whole history, plus each transaction's final label and day."""
    if transactions.empty:
        msg = "the history has no transactions"
        raise DatasetError(msg)
    x = np.asarray(spec.compute(transactions, labels), dtype=np.float64)
    if x.shape != (len(transactions), len(spec.names)):
        msg = f"offline engine returned shape {x.shape}, expected ({len(transactions)}, {len(spec.names)})"
        raise DatasetError(msg)
    fraud = labels.loc[labels["is_fraud"].astype(bool), "transaction_id"].astype(str)
    y = transactions["transaction_id"].astype(str).isin(set(fraud)).to_numpy().astype(np.int8)
    day = np.floor(transactions["event_time"].to_numpy(dtype=np.float64) / DAY_S).astype(np.int64)
    return History(transactions=transactions.reset_index(drop=True), features=x, y=y, day=day, spec=spec)


def _as_day(start: date | datetime) -> int:
    if isinstance(start, datetime):
        if start.tzinfo is None:
            msg = "training start must be timezone-aware"
            raise DatasetError(msg)
        start = start.astimezone(UTC).date()
    return (start - date(1970, 1, 1)).days


@dataclass(frozen=True)
class Fold:
    """One handbook split: index arrays into a ``History``."""

    train_start_day: int
    train_days: int
    gap_days: int
    test_days: int
    train_idx: npt.NDArray[np.int64]
    test_idx: npt.NDArray[np.int64]

    @property
    def train_start(self) -> datetime:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=self.train_start_day)

    def window(self) -> dict[str, str]:
        def iso(day: int) -> str:
            return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)).isoformat()

        test_start = self.train_start_day + self.train_days + self.gap_days
        return {
            "start": iso(self.train_start_day),
            "end": iso(self.train_start_day + self.train_days),
            "test_start": iso(test_start),
            "test_end": iso(test_start + self.test_days),
        }


def make_fold(
    history: History, train_start: date | datetime, train_days: int = 7, gap_days: int = 7, test_days: int = 7
) -> Fold:
    """The handbook's ``get_train_test_set``: train days, a label-delay gap, test days without known cards.

    On test day ``d`` a card is dropped if it had a fraud in the training window or on any day up to
    ``d - gap - 1`` (the reference code's ``delay period`` day), i.e. frauds whose label is known by ``d``.
    """
    start = _as_day(train_start)
    train_mask = (history.day >= start) & (history.day < start + train_days)
    train_idx = np.flatnonzero(train_mask)
    if len(train_idx) == 0:
        msg = f"no transactions in the training window starting {train_start}"
        raise DatasetError(msg)
    cards = history.cards
    known: set[object] = set(cards[train_idx[history.y[train_idx] == 1]])
    test_parts: list[npt.NDArray[np.int64]] = []
    for offset in range(test_days):
        delay_day = start + train_days + offset - 1
        delay_idx = np.flatnonzero((history.day == delay_day) & (history.y == 1))
        known.update(cards[delay_idx])
        day_idx = np.flatnonzero(history.day == start + train_days + gap_days + offset)
        keep = ~pd.Series(cards[day_idx]).isin(known).to_numpy()
        test_parts.append(day_idx[keep])
    test_idx = np.concatenate(test_parts) if test_parts else np.empty(0, np.int64)
    return Fold(start, train_days, gap_days, test_days, train_idx.astype(np.int64), test_idx.astype(np.int64))


def latest_fold_starts(day: npt.NDArray[np.int64], folds: int = 4, train_days: int = 7, gap_days: int = 7,
                       test_days: int = 7) -> list[date]:
    """Training starts of the latest ``folds`` weekly folds whose test window ends before the history's
    last (possibly partial) day: the default protocol for a history other than the handbook's file."""
    last_start = int(day.max()) - (train_days + gap_days + test_days)
    first_day = int(day.min())
    starts = [last_start - 7 * k for k in range(folds - 1, -1, -1)]
    kept = [s for s in starts if s >= first_day]
    if not kept:
        msg = f"the history spans {int(day.max()) - first_day + 1} days: too short for one fold"
        raise DatasetError(msg)
    return [date(1970, 1, 1) + timedelta(days=s) for s in kept]


def split_validation(
    y: npt.NDArray[np.int8], fraction: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Stratified random split of a training window into fit / early-stopping validation positions."""
    rng = np.random.default_rng(seed)
    fit: list[npt.NDArray[np.int64]] = []
    val: list[npt.NDArray[np.int64]] = []
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        n_val = round(len(idx) * fraction)
        val.append(idx[:n_val])
        fit.append(idx[n_val:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))


def make_tf_dataset(
    x: npt.NDArray[np.floating[Any]],
    y: npt.NDArray[np.integer[Any]] | npt.NDArray[np.floating[Any]],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    sample_weight: npt.NDArray[np.floating[Any]] | None = None,
) -> Any:
    """``tf.data`` pipeline over an in-memory fold: shuffle (reproducible), batch, prefetch."""
    import tensorflow as tf

    tensors: tuple[Any, ...] = (x.astype(np.float32), y.astype(np.float32))
    if sample_weight is not None:
        tensors = (*tensors, sample_weight.astype(np.float32))
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
