"""Reading a model repository in TF Serving layout: ``<repo>/<model>/<version>/`` plus ``labels.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoring.errors import LabelNotFound, ModelNotFound

LABELS_FILE = "labels.json"
METADATA_FILE = "assets.extra/fraudstream_metadata.json"
STABLE = "stable"
CANARY = "canary"


@dataclass(frozen=True, slots=True)
class RepositoryState:
    """What a model directory looks like now; two equal states mean nothing to reload."""

    versions: tuple[int, ...]
    labels: tuple[tuple[str, int], ...]

    def resolve(self, label: str | None = None, version: int | None = None) -> int:
        """The version for a label or explicit version; ``stable`` defaults to the newest version."""
        if version is not None:
            if version not in self.versions:
                msg = f"version {version} not in repository (have {list(self.versions)})"
                raise ModelNotFound(msg)
            return version
        wanted = label or STABLE
        mapping = dict(self.labels)
        if wanted in mapping:
            return mapping[wanted]
        if wanted == STABLE and self.versions:
            return self.versions[-1]
        msg = f"version label {wanted!r} is not assigned (labels: {mapping or 'none'})"
        raise LabelNotFound(msg)

    def label_map(self) -> dict[str, int]:
        mapping = dict(self.labels)
        if STABLE not in mapping and self.versions:
            mapping[STABLE] = self.versions[-1]
        return mapping


def _is_complete_version(path: Path) -> bool:
    # A trainer writes the version directory and only then its saved_model.pb is complete; a version
    # without saved_model.pb is still being exported and must not be loaded yet.
    return path.is_dir() and path.name.isdigit() and (path / "saved_model.pb").is_file()


def scan(model_dir: Path) -> RepositoryState:
    """Current versions and labels of ``model_dir``; labels pointing at missing versions are dropped."""
    if not model_dir.is_dir():
        msg = f"model directory {model_dir} does not exist"
        raise ModelNotFound(msg)
    versions = tuple(sorted(int(p.name) for p in model_dir.iterdir() if _is_complete_version(p)))
    labels: dict[str, int] = {}
    labels_path = model_dir / LABELS_FILE
    if labels_path.is_file():
        try:
            raw = json.loads(labels_path.read_text())
        except (OSError, json.JSONDecodeError):
            # A half-written labels.json is read again at the next poll; treat it as "no labels yet".
            raw = {}
        if isinstance(raw, dict):
            labels = {str(k): int(v) for k, v in raw.items() if isinstance(v, int) and v in versions}
    return RepositoryState(versions=versions, labels=tuple(sorted(labels.items())))


def read_metadata(version_dir: Path) -> dict[str, Any]:
    """The exporter's ``fraudstream_metadata.json`` (empty when absent: the signature is authoritative)."""
    path = version_dir / METADATA_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}
