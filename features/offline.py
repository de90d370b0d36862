"""Offline engine: the online engine's raw statistics for a whole history, vectorised with numpy.

Rows are processed per entity in arrival order. Because the effective time t_eff = max(event time,
entity watermark) never decreases along an entity's rows, every tile-aligned window is a contiguous
run of that entity's earlier rows, found with ``searchsorted`` on (entity, bucket) keys: counts and
sums come from int64 prefix sums of cents (exact, as in Lua), min/max from a sparse table, distinct
counterparties and label counts from difference arrays. ``features.derive`` then applies the same
formulas as online.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.definitions import FEATURE_LIST, FeatureList
from features.derive import derive_entity
from features.errors import HistoryFormatError
from features.plan import EntityPlan, compile_plan, compute_stateless, to_cents

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

# (entity code << 41) + bucket keeps buckets of different entities apart; buckets must be in [0, 2**40).
SHIFT = np.int64(1) << np.int64(41)
TX_COLUMNS = ("transaction_id", "card_ref", "terminal_id", "event_time", "amount")
LABEL_COLUMNS = ("transaction_id", "terminal_id", "event_time", "available_at", "is_fraud")


class _Entity:
    """One entity kind's rows, sorted by (entity, arrival)."""

    def __init__(self, ids: npt.NDArray[np.object_] | pd.Series, times: F64) -> None:
        codes, self.uniques = pd.factorize(ids, sort=False)
        self.order = np.argsort(codes, kind="stable")
        self.g = codes[self.order].astype(np.int64)
        m = len(self.g)
        self.m = m
        new = np.empty(m, dtype=bool)
        if m:
            new[0] = True
            new[1:] = self.g[1:] != self.g[:-1]
        starts = np.flatnonzero(new)
        self.start = np.repeat(starts, np.diff(np.append(starts, m)))
        t = times[self.order]
        # t_eff: the running maximum of event times within each entity (the watermark rule)
        self.teff = pd.Series(t).groupby(self.g, sort=False).cummax().to_numpy(dtype=np.float64)
        self.first = new
        self.base = self.g * SHIFT

    def key(self, tile_s: int) -> tuple[I64, I64]:
        b = np.floor(self.teff / tile_s).astype(np.int64)
        if len(b) and (b.min() < 0 or b.max() >= SHIFT // 2):
            msg = "event times must be non-negative epoch seconds"
            raise HistoryFormatError(msg)
        return b, self.base + b


def _sparse_range(values: I64, lo: I64, end: I64, op: np.ufunc) -> I64:
    """op-reduce of values[lo:end] per row (rows with end <= lo get 0), via a sparse table."""
    out = np.zeros(len(lo), dtype=np.int64)
    length = end - lo
    ok = length > 0
    if not ok.any():
        return out
    maxlen = int(length.max())
    tables = [values]
    span = 1
    while span * 2 <= maxlen:
        prev = tables[-1]
        nxt = prev.copy()
        nxt[: len(prev) - span] = op(prev[: len(prev) - span], prev[span:])
        tables.append(nxt)
        span *= 2
    lv = np.zeros(len(lo), dtype=np.int64)
    lv[ok] = np.floor(np.log2(length[ok])).astype(np.int64)
    stacked = np.stack(tables)
    lo_ok, end_ok, lv_ok = lo[ok], end[ok], lv[ok]
    a = stacked[lv_ok, lo_ok]
    b = stacked[lv_ok, end_ok - (np.int64(1) << lv_ok)]
    out[ok] = op(a, b)
    return out


def _entity_raw(
    ep: EntityPlan,
    ent: _Entity,
    counterparty: npt.NDArray[np.object_],
    cents: I64,
    lat: F64,
    lon: F64,
    labels: pd.DataFrame | None,
) -> F64:
    m = ent.m
    raw = np.zeros((m, len(ep.raw)), dtype=np.float64)
    need = set(ep.raw)
    c = cents[ent.order]
    pos = np.arange(m, dtype=np.int64)
    psum = np.concatenate(([0], np.cumsum(c)))
    psq = np.concatenate(([0], np.cumsum(c * c)))
    keys = [ent.key(t) for t in ep.tile_s]
    cp_next: I64 | None = None
    for w, spec in enumerate(ep.windows):
        b, key = keys[spec.level]
        hi_b = b - spec.delay
        lo = np.maximum(np.searchsorted(key, ent.base + hi_b - spec.tiles + 1, side="left"), ent.start)
        if spec.delay == 0:
            end = pos + 1
        else:
            end = np.maximum(np.searchsorted(key, ent.base + hi_b, side="right"), lo)
        n = end - lo
        cols = {
            "n": lambda: n,
            "s": lambda: psum[end] - psum[lo],
            "q": lambda: psq[end] - psq[lo],
            "mn": lambda: _sparse_range(c, lo, end, np.minimum),
            "mx": lambda: _sparse_range(c, lo, end, np.maximum),
        }
        for stat, fn in cols.items():
            if (stat, w) in need:
                raw[:, ep.raw_index(stat, w)] = fn()
        if ("dl", w) in need:
            if cp_next is None:
                cp_next = _next_same_pair(ent, counterparty)
            stop = np.minimum(cp_next, np.searchsorted(key, key + spec.tiles, side="left"))
            cover = np.cumsum(1 - np.bincount(stop, minlength=m + 1)[:m])
            raw[:, ep.raw_index("dl", w)] = cover
        if ("nf", w) in need:
            raw[:, ep.raw_index("nf", w)] = _label_counts(ep, ent, key, spec.tiles, spec.delay, w, labels)
    if ("dt", -1) in need:
        dt = np.full(m, -1.0)
        dt[~ent.first] = (ent.teff[1:] - ent.teff[:-1])[~ent.first[1:]]
        raw[:, ep.raw_index("dt")] = dt
    if ("pgeo", -1) in need:
        la, lo_ = lat[ent.order], lon[ent.order]
        prev_ok = np.zeros(m, dtype=bool)
        prev_ok[1:] = ~np.isnan(la[:-1]) & ~np.isnan(lo_[:-1]) & ~ent.first[1:]
        raw[1:, ep.raw_index("pgeo")] = prev_ok[1:]
        raw[1:, ep.raw_index("plat")] = np.where(prev_ok[1:], la[:-1], 0.0)
        raw[1:, ep.raw_index("plon")] = np.where(prev_ok[1:], lo_[:-1], 0.0)
    unsorted = np.empty_like(raw)
    unsorted[ent.order] = raw
    return unsorted


def _next_same_pair(ent: _Entity, counterparty: npt.NDArray[np.object_]) -> I64:
    """Position (entity-sorted) of the next row with the same (entity, counterparty); m when none."""
    cp_codes, _ = pd.factorize(counterparty)
    cp = cp_codes[ent.order].astype(np.int64)
    m = ent.m
    by_pair = np.lexsort((np.arange(m), cp, ent.g))
    nxt = np.full(m, m, dtype=np.int64)
    same = (ent.g[by_pair[1:]] == ent.g[by_pair[:-1]]) & (cp[by_pair[1:]] == cp[by_pair[:-1]])
    nxt[by_pair[:-1][same]] = by_pair[1:][same]
    return nxt


def _label_counts(
    ep: EntityPlan, ent: _Entity, key: I64, tiles: int, delay: int, w: int, labels: pd.DataFrame | None
) -> I64:
    """Known frauds in the delayed window: label bucket in (b-d-W, b-d] and available_at <= t_eff."""
    m = ent.m
    if labels is None or labels.empty or m == 0:
        return np.zeros(m, dtype=np.int64)
    g_lab = pd.Index(ent.uniques).get_indexer(labels["terminal_id"].to_numpy())
    keep = g_lab >= 0
    g_lab = g_lab[keep].astype(np.int64)
    et = labels["event_time"].to_numpy(dtype=np.float64)[keep]
    avail = labels["available_at"].to_numpy(dtype=np.float64)[keep]
    tile = ep.tile_s[ep.windows[w].level]
    bl = np.floor(et / tile).astype(np.int64)
    q1 = np.searchsorted(key, g_lab * SHIFT + bl + delay, side="left")
    q2 = np.searchsorted(key, g_lab * SHIFT + bl + delay + tiles - 1, side="right")
    # first row of the terminal whose effective time has reached available_at (ranks keep keys integer)
    uniq = np.unique(np.concatenate([ent.teff, avail]))
    key2 = ent.base + np.searchsorted(uniq, ent.teff)
    p = np.searchsorted(key2, g_lab * SHIFT + np.searchsorted(uniq, avail), side="left")
    start = np.maximum(q1, p)
    ok = start < q2
    diff = np.bincount(start[ok], minlength=m + 1) - np.bincount(q2[ok], minlength=m + 1)
    return np.cumsum(diff[:m])


def prepare_labels(labels: pd.DataFrame | None) -> pd.DataFrame | None:
    """Fraud labels in application order (available_at, stable), first per (terminal, transaction)."""
    if labels is None or labels.empty:
        return None
    missing = [col for col in LABEL_COLUMNS if col not in labels.columns]
    if missing:
        msg = f"labels lack columns {missing}"
        raise HistoryFormatError(msg)
    frauds = labels[labels["is_fraud"].astype(bool)]
    frauds = frauds.sort_values("available_at", kind="stable")
    frauds = frauds.assign(terminal_id=frauds["terminal_id"].astype(str))
    return frauds.drop_duplicates(subset=["terminal_id", "transaction_id"], keep="first")


def compute_offline(
    transactions: pd.DataFrame, labels: pd.DataFrame | None = None, *, features: FeatureList = FEATURE_LIST
) -> npt.NDArray[np.float64]:
    """The feature matrix the online engine returns for these rows, applied in this order.

    ``transactions``: columns like ``TransactionEvent`` (``latitude``/``longitude`` optional, NaN =
    missing). ``labels``: columns like ``LabelEvent``; each label counts from its ``available_at``. A
    repeated ``transaction_id`` gets its first occurrence's vector and changes no state.
    """
    missing = [col for col in TX_COLUMNS if col not in transactions.columns]
    if missing:
        msg = f"transactions lack columns {missing}"
        raise HistoryFormatError(msg)
    plan = compile_plan(features)
    n = len(transactions)
    out = np.zeros((n, plan.width), dtype=np.float64)
    if n == 0:
        return out
    amount_all = transactions["amount"].to_numpy(dtype=np.float64)
    time_all = transactions["event_time"].to_numpy(dtype=np.float64)
    out[:, list(plan.stateless_columns)] = compute_stateless(plan, amount_all, time_all)

    tx_codes, _ = pd.factorize(transactions["transaction_id"].to_numpy())
    kept = np.flatnonzero(~pd.Series(tx_codes).duplicated().to_numpy())
    sub = transactions.iloc[kept]
    t = time_all[kept]
    cents = to_cents(amount_all[kept])
    nan = np.full(len(kept), np.nan)
    lat = sub["latitude"].to_numpy(dtype=np.float64) if "latitude" in sub else nan
    lon = sub["longitude"].to_numpy(dtype=np.float64) if "longitude" in sub else nan
    card = sub["card_ref"].astype(str).to_numpy()
    terminal = sub["terminal_id"].astype(str).to_numpy()
    prepared = prepare_labels(labels)
    for ep in plan.entities:
        ids, other = (card, terminal) if ep.entity == "card" else (terminal, card)
        ent = _Entity(ids, t)
        raw = _entity_raw(ep, ent, other, cents, lat, lon, prepared if ep.needs_labels else None)
        feats = derive_entity(ep, raw, cents.astype(np.float64), lat, lon)
        # factorize numbers ids by first appearance, so a row's code is its first occurrence's kept index
        out[:, list(ep.columns)] = feats[tx_codes]
    return out
