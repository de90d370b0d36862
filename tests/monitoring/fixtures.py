"""Factories for monitoring tests: model directories with a drift reference."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monitoring.reference import METADATA, Histogram
from monitoring.stats import bin_counts

SCORE_EDGES = np.linspace(0.0, 1.0, 21)


def histogram(values: Sequence[float] | np.ndarray, edges: np.ndarray) -> dict[str, Any]:
    counts = bin_counts(np.asarray(values), edges).astype(float)
    return Histogram(np.asarray(edges, np.float64), counts).to_json()


def quantile_edges(values: np.ndarray, bins: int = 10) -> np.ndarray:
    """The exporter's rule (training/export.py): quantile edges with open outer ends."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    return edges


def write_reference(
    model_dir: Path, version: int, *, scores: Sequence[float] | np.ndarray | None = None,
    features: Mapping[str, np.ndarray] | None = None, score_edges: np.ndarray = SCORE_EDGES,
) -> Path:
    """Add (or replace) the ``reference`` of ``<model_dir>/<version>``'s metadata, keeping its other keys."""
    path = model_dir / str(version) / METADATA
    path.parent.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"version": version}
    reference: dict[str, Any] = {}
    if scores is not None:
        reference["score_histogram"] = histogram(scores, score_edges)
    if features:
        reference["features"] = {n: histogram(v, quantile_edges(v)) for n, v in features.items()}
    info["reference"] = reference
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)
    return path
