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

    def __init__(self, codes: I64, uniques: pd.Index, times: F64) -> None:
        self.uniques = uniques
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


class _SparseTable:
    """O(1) range min or max over an entity-sorted array, built up to the longest range asked for."""

    def __init__(self, values: I64, maxlen: int, op: np.ufunc) -> None:
        self.op = op
        self.tables = [values]
        span = 1
        # level j holds op over [i, i + 2**j) and is 2**j - 1 shorter than the values: no copies
        while span * 2 <= maxlen:
            prev = self.tables[-1]
            self.tables.append(op(prev[: len(prev) - span], prev[span:]))
            span *= 2

    def query(self, lo: I64, end: I64) -> I64:
        """op over values[lo:end] per row; 0 where the range is empty."""
        out = np.zeros(len(lo), dtype=np.int64)
        length = end - lo
        level = np.zeros(len(lo), dtype=np.int64)
        ok = length > 0
        level[ok] = np.log2(length[ok]).astype(np.int64)
        for j, table in enumerate(self.tables):
            sel = np.flatnonzero(level == j) if j else np.flatnonzero(ok & (level == 0))
            if len(sel):
                a = table[lo[sel]]
                b = table[end[sel] - (1 << j)]
                out[sel] = self.op(a, b)
        return out


Columns = dict[tuple[str, int], F64 | I64]


def _entity_raw(
    ep: EntityPlan,
    ent: _Entity,
    counterparty: I64,
    cents: I64,
    lat: F64,
    lon: F64,
    labels: pd.DataFrame | None,
) -> Columns:
    """The raw statistics of ``ep.raw`` as columns, in the entity-sorted row order of ``ent``."""
    m = ent.m
    need = set(ep.raw)
    cols: Columns = {}
    c = cents[ent.order]
    pos = np.arange(m, dtype=np.int64)
    psum = np.concatenate(([0], np.cumsum(c)))
    psq = np.concatenate(([0], np.cumsum(c * c)))
    keys = [ent.key(t) for t in ep.tile_s]
    spans: dict[int, tuple[I64, I64]] = {}
    for w, spec in enumerate(ep.windows):
        b, key = keys[spec.level]
        hi_b = b - spec.delay
        lo = np.maximum(np.searchsorted(key, key - (spec.delay + spec.tiles - 1), side="left"), ent.start)
        end = pos + 1  # undelayed windows end with the current row
        if spec.delay:
            end = np.maximum(np.searchsorted(key, ent.base + hi_b, side="right"), lo)
        spans[w] = (lo, end)
        if ("n", w) in need:
            cols["n", w] = end - lo
        if ("s", w) in need:
            cols["s", w] = psum[end] - psum[lo]
        if ("q", w) in need:
            cols["q", w] = psq[end] - psq[lo]
    for stat, op in (("mn", np.minimum), ("mx", np.maximum)):
        ws = [w for w in range(len(ep.windows)) if (stat, w) in need]
        if ws:
            longest = max(int((spans[w][1] - spans[w][0]).max(initial=0)) for w in ws)
            table = _SparseTable(c, longest, op)
            for w in ws:
                cols[stat, w] = table.query(*spans[w])
    dl_ws = [w for w in range(len(ep.windows)) if ("dl", w) in need]
    if dl_ws:
        nxt = _next_same_pair(ent, counterparty)
        for w in dl_ws:
            key = keys[ep.windows[w].level][1]
            # row j is its counterparty's latest sighting until the next one, and inside the window
            # until the first row whose bucket is >= bucket_j + tiles
            stop = np.minimum(nxt, np.searchsorted(key, key + ep.windows[w].tiles, side="left"))
            cols["dl", w] = np.cumsum(1 - np.bincount(stop, minlength=m + 1)[:m])
    nf_ws = [w for w in range(len(ep.windows)) if ("nf", w) in need]
    if nf_ws:
        cols.update(_label_counts(ep, ent, keys, nf_ws, labels))
    if ("dt", -1) in need:
        dt = np.full(m, -1.0)
        dt[1:] = np.where(ent.first[1:], -1.0, ent.teff[1:] - ent.teff[:-1])
        cols["dt", -1] = dt
    if ("pgeo", -1) in need:
        la, lo_ = lat[ent.order], lon[ent.order]
        prev_ok = np.zeros(m, dtype=bool)
        prev_ok[1:] = ~np.isnan(la[:-1]) & ~np.isnan(lo_[:-1]) & ~ent.first[1:]
        cols["pgeo", -1] = prev_ok.astype(np.float64)
        cols["plat", -1] = np.where(prev_ok, np.roll(la, 1), 0.0)
        cols["plon", -1] = np.where(prev_ok, np.roll(lo_, 1), 0.0)
    return cols


def _next_same_pair(ent: _Entity, counterparty: I64) -> I64:
    """Position (entity-sorted) of the next row with the same (entity, counterparty); m when none."""
    cp = counterparty[ent.order].astype(np.int64)
    m = ent.m
    # (entity, counterparty, position) in one int64 key: a single sort instead of a lexsort
    pair = (ent.g * (int(cp.max(initial=0)) + 1) + cp) * m + np.arange(m, dtype=np.int64)
    by_pair = np.argsort(pair, kind="stable") if m < (1 << 20) else np.argsort(pair)
    nxt = np.full(m, m, dtype=np.int64)
    pk = pair[by_pair] // m
    same = pk[1:] == pk[:-1]
    nxt[by_pair[:-1][same]] = by_pair[1:][same]
    return nxt


def _label_counts(
    ep: EntityPlan, ent: _Entity, keys: list[tuple[I64, I64]], ws: list[int], labels: pd.DataFrame | None
) -> Columns:
    """Known frauds per delayed window: label bucket in (b-d-W, b-d] and available_at <= t_eff."""
    m = ent.m
    if labels is None or labels.empty or m == 0:
        return {("nf", w): np.zeros(m, dtype=np.int64) for w in ws}
    g_lab = pd.Index(ent.uniques).get_indexer(labels["terminal_id"])
    keep = g_lab >= 0
    g_lab = g_lab[keep].astype(np.int64)
    et = labels["event_time"].to_numpy(dtype=np.float64)[keep]
    avail = labels["available_at"].to_numpy(dtype=np.float64)[keep]
    # First row of the label's terminal whose effective time has reached available_at. With A the
    # sorted distinct availabilities, t_eff >= A[k] iff (number of A <= t_eff) > k, an integer that
    # never decreases along a terminal's rows, so one searchsorted over (terminal, that count) keys works.
    avails = np.unique(avail)
    reached = ent.base + np.searchsorted(avails, ent.teff, side="right")
    p = np.searchsorted(reached, g_lab * SHIFT + np.searchsorted(avails, avail, side="left") + 1, side="left")
    out: Columns = {}
    for w in ws:
        spec = ep.windows[w]
        key = keys[spec.level][1]
        bl = np.floor(et / ep.tile_s[spec.level]).astype(np.int64)
        q1 = np.searchsorted(key, g_lab * SHIFT + bl + spec.delay, side="left")
        q2 = np.searchsorted(key, g_lab * SHIFT + bl + spec.delay + spec.tiles - 1, side="right")
        start = np.maximum(q1, p)
        ok = start < q2
        diff = np.bincount(start[ok], minlength=m + 1) - np.bincount(q2[ok], minlength=m + 1)
        out["nf", w] = np.cumsum(diff[:m])
    return out


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
    # Built feature-major and returned as its transpose (a column-major view): each feature is written
    # with one np.take, the cheapest way to undo the per-entity sort.
    out_t = np.zeros((plan.width, n), dtype=np.float64)
    out = out_t.T
    if n == 0:
        return out
    amount_all = transactions["amount"].to_numpy(dtype=np.float64)
    time_all = transactions["event_time"].to_numpy(dtype=np.float64)
    stateless = compute_stateless(plan, amount_all, time_all)
    for j, k in enumerate(plan.stateless_columns):
        out_t[k] = stateless[:, j]

    repeated = transactions["transaction_id"].duplicated().to_numpy()
    if not repeated.any():
        kept = np.arange(n, dtype=np.int64)
        tx_codes = kept
    else:
        # factorize numbers ids by first appearance: a row's code is its first occurrence's kept index
        tx_codes = pd.factorize(transactions["transaction_id"])[0].astype(np.int64)
        kept = np.flatnonzero(~repeated)
    t = time_all[kept]
    cents = to_cents(amount_all[kept])
    nan = np.full(len(kept), np.nan)
    lat = transactions["latitude"].to_numpy(dtype=np.float64)[kept] if "latitude" in transactions else nan
    lon = transactions["longitude"].to_numpy(dtype=np.float64)[kept] if "longitude" in transactions else nan
    codes = {
        name: pd.factorize(_ids(transactions[col]) if len(kept) == n else _ids(transactions[col]).iloc[kept])
        for name, col in (("card", "card_ref"), ("terminal", "terminal_id"))
    }
    prepared = prepare_labels(labels)
    for ep in plan.entities:
        (ids, uniques), other = codes[ep.entity], codes["terminal" if ep.entity == "card" else "card"][0]
        ent = _Entity(ids.astype(np.int64), uniques, t)
        lab = prepared if ep.needs_labels else None
        raw = _entity_raw(ep, ent, other.astype(np.int64), cents, lat, lon, lab)
        sorted_cents = cents[ent.order].astype(np.float64)
        cols = derive_entity(ep, raw.__getitem__, sorted_cents, lat[ent.order], lon[ent.order])
        inv = np.empty(ent.m, dtype=np.int64)
        inv[ent.order] = np.arange(ent.m)
        rows = inv[tx_codes].astype(np.intp)
        for k, col in zip(ep.columns, cols, strict=True):
            np.take(col, rows, out=out_t[k])
    return out


def _ids(col: pd.Series) -> pd.Series:
    return col if pd.api.types.is_string_dtype(col.dtype) else col.astype(str)
