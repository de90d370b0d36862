"""Reference distributions stored with each model version (written by training/export.py)::

    <model_dir>/<version>/assets.extra/fraudstream_metadata.json
        {"reference": {"score_histogram": {"edges": [...], "counts": [...]},
                       "features": {"<name>": {"edges": [...], "counts": [...]}}}}
    <model_dir>/labels.json     {"stable": 3, "canary": 4}

Files are re-read when their mtime or size changes, so a newly exported version (or a reference added
afterwards) is picked up without restarting the monitor.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from monitoring.stats import as_counts, parse_edges

log = logging.getLogger(__name__)
METADATA = Path("assets.extra") / "fraudstream_metadata.json"
SCORE = "score"
"""The subject name of the score distribution (features use their own names)."""


@dataclass(frozen=True)
class Histogram:
    edges: npt.NDArray[np.float64]
    counts: npt.NDArray[np.float64]

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Histogram:
        edges, counts = parse_edges(raw["edges"]), as_counts(raw["counts"])
        if counts.size != edges.size - 1:
            msg = f"{counts.size} counts for {edges.size - 1} bins"
            raise ValueError(msg)
        return cls(edges, counts)

    def to_json(self) -> dict[str, Any]:
        def num(x: float) -> float | str:
            return float(x) if np.isfinite(x) else ("inf" if x > 0 else "-inf")

        return {"edges": [num(e) for e in self.edges], "counts": [int(c) for c in self.counts]}


@dataclass(frozen=True)
class Reference:
    model_name: str
    version: int
    score: Histogram | None
    features: dict[str, Histogram] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.score is None and not self.features


def parse_reference(model_name: str, version: int, metadata: dict[str, Any]) -> Reference:
    raw = metadata.get("reference") or {}
    score = Histogram.parse(raw["score_histogram"]) if raw.get("score_histogram") else None
    features = {name: Histogram.parse(h) for name, h in (raw.get("features") or {}).items()}
    return Reference(model_name, version, score, features)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class ReferenceCatalog:
    """References of one model directory (``<repository>/<model_name>``), cached per file stamp."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._cache: dict[int, tuple[tuple[int, int], Reference]] = {}
        self._labels: tuple[tuple[int, int] | None, dict[str, int]] = (None, {})

    @property
    def model_name(self) -> str:
        return self.model_dir.name

    def get(self, version: int | None) -> Reference | None:
        if version is None:
            return None
        path = self.model_dir / str(version) / METADATA
        stamp = _stamp(path)
        if stamp is None:
            return None
        cached = self._cache.get(version)
        if cached and cached[0] == stamp:
            return cached[1]
        try:
            reference = parse_reference(self.model_name, version, json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A half-written or malformed file must not stop monitoring; the next stamp retries.
            log.warning("cannot read the drift reference of %s version %s: %s", self.model_name, version, exc)
            return None
        self._cache[version] = (stamp, reference)
        return reference

    def labels(self) -> dict[str, int]:
        path = self.model_dir / "labels.json"
        stamp = _stamp(path)
        if stamp != self._labels[0]:
            try:
                raw = json.loads(path.read_text()) if stamp else {}
                labels = {str(k): int(v) for k, v in raw.items()}
            except (OSError, ValueError, TypeError, AttributeError):
                labels = {}
            self._labels = (stamp, labels)
        return dict(self._labels[1])

    def versions(self) -> list[int]:
        if not self.model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in self.model_dir.iterdir() if p.name.isdigit() and p.is_dir())

    def stable_version(self) -> int | None:
        """The ``stable`` label, else the newest version: the reference features are compared with."""
        labels = self.labels()
        if "stable" in labels:
            return labels["stable"]
        versions = self.versions()
        return versions[-1] if versions else None
