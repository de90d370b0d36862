"""Offline engine: the online engine's raw statistics for a whole history, vectorised with numpy.

Rows are processed per entity in arrival order. Because the effective time t_eff = max(event time,
entity watermark) never decreases along an entity's rows, every tile-aligned window is a contiguous
run of that entity's earlier rows. Its ends are "the entity's first row whose bucket is >= x", computed
once per distinct (level, offset): from a dense (entity, bucket) table of row counts when it is small
(day tiles), else by stepping back a few rows (short windows) and ``searchsorted`` for the rest. Counts
and sums come from int64 prefix sums of cents (exact, as in Lua), min/max from a sparse table, distinct
counterparties and label counts from difference arrays. ``features.derive`` then applies the same
formulas as online.

Windows never leave an entity, so the entity-sorted rows are processed in runs of whole entities
(~64k rows): temporaries stay in cache and are reused instead of being fresh (zeroed) pages, and each
run's features are scattered into the row-major output as whole rows, which undoes the sort far more
cheaply than one gather per feature column.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from features.definitions import FEATURE_LIST, FeatureList
from features.derive import derive_entity
from features.errors import HistoryFormatError
from features.plan import EntityPlan, compile_plan, compute_stateless, to_cents

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

# (entity code << 41) + bucket keeps buckets of different entities apart; buckets must be in [0, 2**40).
SHIFT = np.int64(1) << np.int64(41)
# A level uses the dense (entity, bucket) table while it has at most this many cells per row (+ slack).
GRID_CELLS_PER_ROW = 4
GRID_SLACK = 1 << 16
# Backward steps tried per row before a binary search (searchsorted) for a window start.
SCAN_STEPS = 4
# Entity-sorted rows are processed in runs of whole entities of about this many rows.
CHUNK_ROWS = 1 << 16
TX_COLUMNS = ("transaction_id", "card_ref", "terminal_id", "event_time", "amount")
LABEL_COLUMNS = ("transaction_id", "terminal_id", "event_time", "available_at", "is_fraud")


def _stable_argsort(codes: I64, n_codes: int) -> I64:
    """Stable argsort of codes in [0, n_codes): numpy radix-sorts 16-bit keys, several times faster."""
    if n_codes > 1 << 32:
        return np.argsort(codes, kind="stable")
    low = np.argsort(codes.astype(np.uint16), kind="stable")  # the low 16 bits (wraps)
    if n_codes <= 1 << 16:
        return low
    return low[np.argsort((codes[low] >> 16).astype(np.uint16), kind="stable")]


class _Level:
    """One tile level of a run of entity-sorted rows: where each entity's buckets start."""

    def __init__(self, g: I64, teff: F64, tile_s: int, n_codes: int) -> None:
        b = np.floor(teff / tile_s).astype(np.int64)
        if len(b) and (b.min() < 0 or b.max() >= SHIFT // 2):
            msg = "event times must be non-negative epoch seconds"
            raise HistoryFormatError(msg)
        self.lo = int(b.min()) if len(b) else 0
        self.span = int(b.max()) - self.lo + 1 if len(b) else 1
        self.b = b
        self.cum: I64 | None = None
        if n_codes * self.span <= GRID_CELLS_PER_ROW * len(b) + GRID_SLACK:
            # cum[g * span + x] = rows before entity g's first bucket >= lo + x: one gather per lookup
            self.gspan = g * self.span
            counts = np.bincount(self.gspan + (b - self.lo), minlength=n_codes * self.span)
            self.cum = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=self.cum[1:])
        else:
            self.key = g * SHIFT + b

    def first_at(self, g: I64, x: I64) -> I64:
        """Per query, entity g's first sorted row with bucket >= x (the entity's end when none)."""
        if self.cum is not None:
            return self.cum[g * self.span + np.clip(x - self.lo, 0, self.span)]
        return np.searchsorted(self.key, g * SHIFT + x)

    def row_first_at(self, offset: int, first: npt.NDArray[np.bool_]) -> I64:
        """``first_at`` for every row, at its own entity and bucket - offset (``first``: entity starts)."""
        if self.cum is not None:
            return self.cum[self.gspan + np.clip(self.b - (self.lo + offset), 0, self.span)]
        if offset < 0:
            return np.searchsorted(self.key, self.key - offset)
        # Windows of fine levels hold a row or two: step back from each row while the previous row of
        # its entity is still inside, a few cheap passes; the rest by binary search.
        b, x = self.b, self.b - offset
        out = np.arange(len(b), dtype=np.int64)
        rows = np.flatnonzero(~first[1:] & (b[:-1] >= x[1:])) + 1
        for step in range(1, SCAN_STEPS + 1):
            out[rows] = rows - step
            rows = rows[~first[rows - step] & (b[rows - step - 1] >= x[rows])]
            if not len(rows):
                return out
        out[rows] = np.searchsorted(self.key, self.key[rows] - offset)
        return out


class _Entity:
    """One entity kind's rows, sorted by (entity, arrival), with their effective times."""

    def __init__(self, codes: I64, uniques: pd.Index, times: F64, monotone: bool) -> None:
        self.uniques = uniques
        self.order = _stable_argsort(codes, len(uniques))
        self.g = codes[self.order]
        m = len(self.g)
        self.m = m
        self.first = np.empty(m, dtype=bool)
        if m:
            self.first[0] = True
            np.not_equal(self.g[1:], self.g[:-1], out=self.first[1:])
        t = times[self.order]
        # t_eff: the running maximum of event times within each entity (the watermark rule), which is
        # the event time itself when arrival order never goes back in time
        self.teff: F64 = t
        if not monotone:
            self.teff = np.asarray(pd.Series(t).groupby(self.g, sort=False).cummax(), dtype=np.float64)

    def chunks(self) -> list[tuple[int, int]]:
        """Runs of whole entities of about CHUNK_ROWS rows: their temporaries stay small and cached."""
        starts = np.flatnonzero(self.first)
        at = np.searchsorted(starts, np.arange(CHUNK_ROWS, self.m, CHUNK_ROWS))
        bounds = [0, *np.unique(starts[at[at < len(starts)]]).tolist(), self.m]
        return [(a, b) for a, b in pairwise(bounds) if b > a]


class _Rows:
    """A run of whole entities (codes rebased to 0) from ``_Entity``; windows never leave it."""

    def __init__(self, g: I64, teff: F64, first: npt.NDArray[np.bool_]) -> None:
        self.g = g
        self.teff = teff
        self.first = first
        self.m = len(g)
        self.n_codes = int(g[-1]) + 1 if len(g) else 0
        self._levels: dict[int, _Level] = {}
        self._ends: dict[tuple[int, int], I64] = {}

    def level(self, tile_s: int) -> _Level:
        if tile_s not in self._levels:
            self._levels[tile_s] = _Level(self.g, self.teff, tile_s, self.n_codes)
        return self._levels[tile_s]

    def first_at(self, tile_s: int, offset: int) -> I64:
        """Per row, the entity's first row with bucket >= the row's bucket - offset; windows share these."""
        if (tile_s, offset) not in self._ends:
            self._ends[tile_s, offset] = self.level(tile_s).row_first_at(offset, self.first)
        return self._ends[tile_s, offset]


class _SparseTable:
    """O(1) range min or max over an entity-sorted array, built up to the longest range asked for."""

    def __init__(self, values: I64, maxlen: int, op: np.ufunc) -> None:
        self.op = op
        self.m = m = len(values)
        table = np.empty((max(1, maxlen.bit_length()), m), dtype=values.dtype)
        table[0] = values
        # row j holds op over [i, i + 2**j); its last 2**j - 1 entries are never read (ranges stay inside)
        for j in range(1, len(table)):
            span = 1 << (j - 1)
            op(table[j - 1, : m - span], table[j - 1, span:], out=table[j, : m - span])
            table[j, m - span :] = table[j - 1, m - span :]
        self.flat = table.ravel()

    def query(self, lo: I64, end: I64) -> I64:
        """op over values[lo:end] per row; 0 where the range is empty."""
        length = end - lo
        level = (np.frexp(np.maximum(length, 1))[1] - 1).astype(np.int64)  # floor(log2), exact
        at = level * self.m
        # one gather per end, from the row of the right level; empty ranges read anything, then 0
        a = self.flat.take(at + lo, mode="clip")
        b = self.flat.take(at + end - (np.int64(1) << level), mode="clip")
        out: I64 = self.op(a, b)
        # windows that end with the current row are never empty: only delayed ones need the mask
        return out if len(length) == 0 or length.min() > 0 else np.where(length > 0, out, 0)


Columns = dict[tuple[str, int], F64]


@dataclass(frozen=True, slots=True)
class _Labels:
    """Fraud labels of one entity kind as arrays, sorted by entity code."""

    g: I64
    event_time: F64
    available_at: F64

    @classmethod
    def of(cls, labels: pd.DataFrame, uniques: pd.Index) -> _Labels:
        g = pd.Index(uniques).get_indexer(labels["terminal_id"])
        keep = np.flatnonzero(g >= 0)
        keep = keep[np.argsort(g[keep], kind="stable")]
        return cls(
            g=g[keep].astype(np.int64),
            event_time=labels["event_time"].to_numpy(dtype=np.float64)[keep],
            available_at=labels["available_at"].to_numpy(dtype=np.float64)[keep],
        )

    def between(self, g0: int, g1: int) -> _Labels:
        """The labels of entities [g0, g1), codes rebased to g0."""
        a, b = np.searchsorted(self.g, [g0, g1])
        return _Labels(self.g[a:b] - g0, self.event_time[a:b], self.available_at[a:b])


def _entity_raw(
    ep: EntityPlan, rows: _Rows, c: I64, lat: F64, lon: F64, counterparty: tuple[I64, int], labels: _Labels | None
) -> Columns:
    """The raw statistics of ``ep.raw`` as float64 columns for ``rows`` (cents ``c``, coordinates)."""
    m = rows.m
    need = set(ep.raw)
    cols: dict[tuple[str, int], F64 | I64] = {}
    psum = np.concatenate(([0], np.cumsum(c)))
    psq = np.concatenate(([0], np.cumsum(c * c))) if any(s == "q" for s, _ in need) else psum
    next_row = np.arange(1, m + 1, dtype=np.int64)  # undelayed windows end with the current row
    spans: dict[int, tuple[I64, I64]] = {}
    for w, spec in enumerate(ep.windows):
        tile_s = ep.tile_s[spec.level]
        lo = rows.first_at(tile_s, spec.delay + spec.tiles - 1)
        end = rows.first_at(tile_s, spec.delay - 1) if spec.delay else next_row
        spans[w] = (lo, end)
        if ("n", w) in need:
            cols["n", w] = np.subtract(end, lo, dtype=np.float64)  # derive wants floats: one pass
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
        pair_next = _next_same_pair(rows.g, *counterparty)
        for w in dl_ws:
            spec = ep.windows[w]
            # row j is its counterparty's latest sighting until the next one, and inside later rows'
            # windows until the first row whose window starts after j (bucket >= bucket_j + tiles); as
            # window starts never decrease along the run, that row is the count of starts <= j
            starts = rows.first_at(ep.tile_s[spec.level], spec.tiles - 1)
            leave = np.cumsum(np.bincount(starts, minlength=m))
            stop = np.minimum(pair_next, leave)
            cols["dl", w] = np.cumsum(1 - np.bincount(stop, minlength=m + 1)[:m])
    nf_ws = [w for w in range(len(ep.windows)) if ("nf", w) in need]
    if nf_ws:
        cols.update(_label_counts(ep, rows, nf_ws, labels))
    if ("dt", -1) in need:
        dt = np.full(m, -1.0)
        dt[1:] = np.where(rows.first[1:], -1.0, rows.teff[1:] - rows.teff[:-1])
        cols["dt", -1] = dt
    if ("pgeo", -1) in need:
        prev_ok = np.zeros(m, dtype=bool)
        prev_ok[1:] = ~np.isnan(lat[:-1]) & ~np.isnan(lon[:-1]) & ~rows.first[1:]
        cols["pgeo", -1] = prev_ok.astype(np.float64)
        cols["plat", -1] = np.where(prev_ok, np.roll(lat, 1), 0.0)
        cols["plon", -1] = np.where(prev_ok, np.roll(lon, 1), 0.0)
    # converted once here: derive reads some statistics for several features
    return {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}


def _next_same_pair(g: I64, counterparty: I64, n_counterparties: int) -> I64:
    """Per entity-sorted row, the position of the next row with the same entity and counterparty; m if none."""
    m = len(g)
    # the rows are entity-sorted already: a stable sort by counterparty gives (counterparty, entity, arrival)
    by_pair = _stable_argsort(counterparty, n_counterparties)
    a, b = by_pair[:-1], by_pair[1:]
    same = (counterparty[a] == counterparty[b]) & (g[a] == g[b])
    nxt = np.full(m, m, dtype=np.int64)
    nxt[a[same]] = b[same]
    return nxt


def _first_reaching(values: F64, lo: I64, hi: I64, needles: F64) -> I64:
    """Per needle, the first index in [lo, hi) whose (there non-decreasing) value is >= it; hi if none."""
    lo, hi = lo.copy(), hi.copy()
    # a binary search on all needles at once: a few dozen steps over the (few) labels
    while (active := lo < hi).any():
        mid = (lo + hi) // 2
        below = active & (values[np.minimum(mid, len(values) - 1)] < needles)
        lo = np.where(below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)
    return lo


def _label_counts(ep: EntityPlan, rows: _Rows, ws: list[int], labels: _Labels | None) -> Columns:
    """Known frauds per delayed window: label bucket in (b-d-W, b-d] and available_at <= t_eff."""
    m = rows.m
    if labels is None or len(labels.g) == 0 or m == 0:
        return {("nf", w): np.zeros(m) for w in ws}
    g = labels.g
    # the first row of the label's terminal whose effective time has reached available_at
    bounds = np.append(np.flatnonzero(rows.first), m)
    p = _first_reaching(rows.teff, bounds[g], bounds[g + 1], labels.available_at)
    out: Columns = {}
    for w in ws:
        spec = ep.windows[w]
        level = rows.level(ep.tile_s[spec.level])
        bl = np.floor(labels.event_time / ep.tile_s[spec.level]).astype(np.int64)
        q1 = level.first_at(g, bl + spec.delay)
        q2 = level.first_at(g, bl + spec.delay + spec.tiles)
        start = np.maximum(q1, p)
        ok = start < q2
        diff = np.zeros(m + 1, dtype=np.int64)
        np.add.at(diff, start[ok], 1)
        np.add.at(diff, q2[ok], -1)
        out["nf", w] = np.cumsum(diff[:m]).astype(np.float64)
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
    # Row-major: each entity writes its features of a run of rows as one block of whole rows, which
    # scatters into the arrival order far faster than one column at a time.
    out = np.zeros((n, plan.width), dtype=np.float64)
    if n == 0:
        return out
    amount_all = transactions["amount"].to_numpy(dtype=np.float64)
    time_all = transactions["event_time"].to_numpy(dtype=np.float64)
    out[:, _columns(plan.stateless_columns)] = compute_stateless(plan, amount_all, time_all)

    repeated = _repeated(transactions["transaction_id"])
    if not repeated.any():
        kept = np.arange(n, dtype=np.int64)
        tx_codes = kept
    else:
        # factorize numbers ids by first appearance: a row's code is its first occurrence's kept index
        tx_codes = pd.factorize(transactions["transaction_id"])[0].astype(np.int64)
        kept = np.flatnonzero(~repeated)
    t = time_all[kept]
    monotone = bool(np.all(t[1:] >= t[:-1]))
    cents = to_cents(amount_all[kept])
    nan = np.full(len(kept), np.nan)
    lat = transactions["latitude"].to_numpy(dtype=np.float64)[kept] if "latitude" in transactions else nan
    lon = transactions["longitude"].to_numpy(dtype=np.float64)[kept] if "longitude" in transactions else nan
    codes: dict[str, tuple[I64, pd.Index]] = {}
    for name, column in (("card", "card_ref"), ("terminal", "terminal_id")):
        values = _ids(transactions[column])
        ids, uniques = pd.factorize(values if len(kept) == n else values.iloc[kept])
        codes[name] = (ids.astype(np.int64), uniques)
    ents = {ep.entity: _Entity(*codes[ep.entity], t, monotone) for ep in plan.entities}
    prepared = prepare_labels(labels)
    for ep in plan.entities:
        ent = ents[ep.entity]
        dest = kept[ent.order] if len(kept) < n else ent.order  # the output row of each sorted row
        c, la, lo = cents[ent.order], lat[ent.order], lon[ent.order]
        other, other_uniques = codes["terminal" if ep.entity == "card" else "card"]
        counterparty = other[ent.order]
        labs = _Labels.of(prepared, ent.uniques) if ep.needs_labels and prepared is not None else None
        at = _columns(ep.columns)
        for a, b in ent.chunks():
            rows = _Rows(ent.g[a:b] - ent.g[a], ent.teff[a:b], ent.first[a:b])
            chunk_labels = None if labs is None else labs.between(int(ent.g[a]), int(ent.g[b - 1]) + 1)
            cp = (counterparty[a:b], len(other_uniques))
            raw = _entity_raw(ep, rows, c[a:b], la[a:b], lo[a:b], cp, chunk_labels)
            cols = derive_entity(ep, raw.__getitem__, c[a:b].astype(np.float64), la[a:b], lo[a:b])
            # feature-major then transposed: the scatter reads it in row order, cheaper than np.stack
            _put_rows(out, dest[a:b], at, np.array(cols).T)
    if len(kept) < n:
        # a repeated transaction gets its first occurrence's entity features
        entity_cols = np.array([k for ep in plan.entities for k in ep.columns], dtype=np.int64)
        rep = np.flatnonzero(repeated)
        out[np.ix_(rep, entity_cols)] = out[np.ix_(kept[tx_codes[rep]], entity_cols)]
    return out


def _repeated(ids: pd.Series) -> npt.NDArray[np.bool_]:
    """Rows whose transaction id occurred before.

    Hashing a million strings is slow; decimal ids (the usual case) parse as integers in a few ms, and
    distinct integers prove distinct ids. Anything else, or a repeat, goes through pandas.
    """
    values: I64 | None = None
    if pd.api.types.is_signed_integer_dtype(ids.dtype):
        values = ids.to_numpy(dtype=np.int64)
    elif isinstance(ids.array, pd.arrays.ArrowStringArray):
        try:
            parsed = pa.array(ids.array).cast(pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            parsed = None
        if parsed is not None and parsed.null_count == 0:
            values = np.asarray(parsed.to_numpy(), dtype=np.int64)
    if values is not None:
        if np.all(values[1:] > values[:-1]):
            return np.zeros(len(ids), dtype=bool)
        ordered = np.sort(values)
        if not (ordered[1:] == ordered[:-1]).any():
            return np.zeros(len(ids), dtype=bool)
    return np.asarray(ids.duplicated(), dtype=bool)


def _put_rows(out: F64, rows: I64, cols: slice | I64, block: F64) -> None:
    """out[rows, cols] = block, rows and columns indexed independently."""
    if isinstance(cols, slice):
        out[rows, cols] = block
    else:
        out[np.ix_(rows, cols)] = block


def _columns(cols: tuple[int, ...]) -> slice | I64:
    """Output columns as a slice when contiguous (the usual case): cheaper to index than an array."""
    if cols and list(cols) == list(range(cols[0], cols[0] + len(cols))):
        return slice(cols[0], cols[0] + len(cols))
    return np.array(cols, dtype=np.int64)


def _ids(col: pd.Series) -> pd.Series:
    return col if pd.api.types.is_string_dtype(col.dtype) else col.astype(str)
