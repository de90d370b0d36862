"""Drift statistics over histograms that share the reference's bin edges.

Both statistics take counts, not raw values: the live side is accumulated as fixed-bin counts (by the
monitor for scores, by the worker's sketch for features), so a day-long window costs one small array.

- PSI (population stability index): ``Σ (a - e) · ln(a / e)`` over bin shares, with a small floor on
  empty bins so one empty bin does not make it infinite. Rule of thumb: < 0.1 stable, 0.1–0.25 moderate,
  > 0.25 significant shift.
- KS: the largest distance between the two empirical CDFs evaluated at the bin edges — the two-sample
  Kolmogorov–Smirnov statistic of the binned data (a lower bound of the unbinned one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Counts = npt.NDArray[np.float64]
EPSILON = 1e-4
"""Floor of a bin's share: ln(0) is undefined, and 1e-4 keeps one stray empty bin from dominating."""


def as_counts(values: Sequence[float] | npt.NDArray[Any]) -> Counts:
    counts = np.asarray(values, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        msg = f"counts must be a non-empty 1-D array, got shape {counts.shape}"
        raise ValueError(msg)
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        msg = "counts must be finite and non-negative"
        raise ValueError(msg)
    return counts


def _shares(counts: Counts) -> Counts:
    total = counts.sum()
    if total <= 0:
        msg = "a histogram with no observations has no distribution"
        raise ValueError(msg)
    shares: Counts = counts / total
    return shares


def _check_pair(expected: Counts, actual: Counts) -> None:
    if expected.shape != actual.shape:
        msg = f"histograms have different bins: {expected.shape[0]} reference vs {actual.shape[0]} live"
        raise ValueError(msg)


def psi(expected: Sequence[float] | npt.NDArray[Any], actual: Sequence[float] | npt.NDArray[Any]) -> float:
    """Population stability index of ``actual`` (live) against ``expected`` (reference) bin counts."""
    e_counts, a_counts = as_counts(expected), as_counts(actual)
    _check_pair(e_counts, a_counts)
    e = np.maximum(_shares(e_counts), EPSILON)
    a = np.maximum(_shares(a_counts), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_statistic(
    expected: Sequence[float] | npt.NDArray[Any], actual: Sequence[float] | npt.NDArray[Any]
) -> float:
    """Two-sample KS statistic of binned data: max |CDF_ref - CDF_live| over the bin edges."""
    e_counts, a_counts = as_counts(expected), as_counts(actual)
    _check_pair(e_counts, a_counts)
    gap = np.abs(np.cumsum(_shares(e_counts)) - np.cumsum(_shares(a_counts)))
    return float(gap.max())


def parse_edges(raw: Sequence[float | str]) -> npt.NDArray[np.float64]:
    """Edges as the exporter writes them: numbers, with ``"-inf"``/``"inf"`` strings for open ends."""
    edges = np.array([float(e) for e in raw], dtype=np.float64)
    if edges.size < 2 or np.any(np.isnan(edges)) or np.any(np.diff(edges) <= 0):
        msg = "bin edges must be at least two strictly increasing numbers"
        raise ValueError(msg)
    return edges


def bin_counts(values: npt.NDArray[Any], edges: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Counts of ``values`` in the bins ``[e0, e1), [e1, e2) … [e_{n-1}, e_n]``; values outside the outer
    edges go to the first or last bin, so nothing observed is dropped (scores are clipped to [0, 1])."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[~np.isnan(flat)]
    index = np.searchsorted(edges, flat, side="right") - 1
    np.clip(index, 0, edges.size - 2, out=index)
    return np.bincount(index, minlength=edges.size - 1).astype(np.int64)
