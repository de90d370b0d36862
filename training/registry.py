"""The model repository: integer versions, ``stable``/``canary`` labels, the promotion gate, models.config.

``<repository>/<model>/labels.json`` is ``{"stable": 3, "canary": 4}``; ``label_history.json`` beside it
keeps every label move so ``rollback`` can return to the previous stable version. ``<repository>/
models.config`` is TF Serving's ``--model_config_file`` (text proto): it serves exactly the labelled
versions, because TF Serving refuses a label pointing at a version it has not loaded.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from training.errors import RegistryError

Label = Literal["stable", "canary"]
LABELS: tuple[Label, ...] = ("stable", "canary")


def _write_atomic(path: Path, text: str) -> None:
    # Readers (the scoring backend, TF Serving) poll these files; a rename is never seen half-written.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


@dataclass(frozen=True)
class GateConfig:
    """A new version goes to ``canary`` only if ``metric`` beats stable's on the same holdout by
    more than ``margin``."""

    metric: str = "average_precision"
    margin: float = 0.0
    """Absolute improvement required (0.0 = must be strictly better)."""


@dataclass(frozen=True)
class GateDecision:
    promoted_to: Label | None
    reason: str
    candidate: float | None
    stable: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "promoted_to": self.promoted_to,
            "reason": self.reason,
            "candidate": self.candidate,
            "stable": self.stable,
        }


class ModelRegistry:
    def __init__(self, repository: Path, model_name: str, *, serving_base_path: str | None = None) -> None:
        self.repository = repository
        self.model_name = model_name
        self.model_dir = repository / model_name
        self.serving_base_path = serving_base_path
        """The repository as TF Serving sees it (its container mounts it elsewhere, e.g. ``/models``)."""

    # --- versions --------------------------------------------------------------------------------
    def versions(self) -> list[int]:
        if not self.model_dir.exists():
            return []
        return sorted(int(p.name) for p in self.model_dir.iterdir() if p.is_dir() and p.name.isdigit())

    def next_version(self) -> int:
        """Max existing + 1, also counting versions ever labelled, so a deleted directory is never reused."""
        seen = set(self.versions())
        for entry in self.history():
            seen.update(v for v in (entry.get("version"), entry.get("previous")) if isinstance(v, int))
        return max(seen, default=0) + 1

    def version_dir(self, version: int) -> Path:
        path = self.model_dir / str(version)
        if not path.is_dir():
            msg = f"{self.model_name} has no version {version} in {self.model_dir}"
            raise RegistryError(msg)
        return path

    def metadata(self, version: int) -> dict[str, Any]:
        path = self.version_dir(version) / "assets.extra" / "fraudstream_metadata.json"
        if not path.exists():
            return {}
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def version_of_request(self, request_id: str) -> int | None:
        """The version a retrain request already produced (its id is in the version's metadata), if any.

        Exports are atomic (a version directory appears only whole), so this is what makes a redelivered
        request — the trainer restarted after exporting, before its offset was committed — idempotent."""
        for version in reversed(self.versions()):
            if self.metadata(version).get("request_id") == request_id:
                return version
        return None

    # --- labels ----------------------------------------------------------------------------------
    @property
    def labels_file(self) -> Path:
        return self.model_dir / "labels.json"

    @property
    def history_file(self) -> Path:
        return self.model_dir / "label_history.json"

    def labels(self) -> dict[str, int]:
        if not self.labels_file.exists():
            return {}
        raw: dict[str, int] = json.loads(self.labels_file.read_text())
        return {k: int(v) for k, v in raw.items() if k in LABELS}

    def history(self) -> list[dict[str, Any]]:
        if not self.history_file.exists():
            return []
        data: list[dict[str, Any]] = json.loads(self.history_file.read_text())
        return data

    def _save(self, labels: dict[str, int], event: dict[str, Any]) -> None:
        self.model_dir.mkdir(parents=True, exist_ok=True)
        history = [*self.history(), {**event, "at": datetime.now(UTC).isoformat()}]
        _write_atomic(self.history_file, json.dumps(history, indent=2) + "\n")
        _write_atomic(self.labels_file, json.dumps(dict(sorted(labels.items())), indent=2) + "\n")
        self.write_models_config()

    def set_label(self, label: Label, version: int, *, reason: str = "manual") -> dict[str, int]:
        self.version_dir(version)
        labels = self.labels()
        previous = labels.get(label)
        labels[label] = version
        if label == "stable" and labels.get("canary") == version:
            del labels["canary"]  # a canary promoted to stable is no longer a canary
        self._save(
            labels,
            {"action": "set", "label": label, "version": version, "previous": previous, "reason": reason},
        )
        return labels

    def promote(
        self, version: int | None = None, label: Label = "stable", *, verify: bool = False,
        expected_feature_hash: str | None = None,
    ) -> dict[str, int]:
        """Move ``label`` to ``version`` (default: the current canary, to stable).

        ``verify``: first load the version and run the checks the worker's hot reload runs (``verify``);
        a version that fails them is refused with ``RegistryError`` and the labels stay as they are.
        """
        if version is None:
            version = self.labels().get("canary")
            if version is None:
                msg = "no canary to promote; pass --version"
                raise RegistryError(msg)
        if verify:
            self.verify(version, expected_feature_hash=expected_feature_hash)
        return self.set_label(label, version, reason="promote")

    def verify(self, version: int, *, expected_feature_hash: str | None) -> None:
        """Raise ``RegistryError`` (one line, with the reason) unless ``version`` loads, was trained on
        ``expected_feature_hash`` and passes its warm-up with finite scores (scoring/vetting.py)."""
        from scoring.errors import ScoringError
        from scoring.local import vet_version
        from scoring.vetting import one_line, rejection_reason

        try:
            vet_version(self.version_dir(version), expected_feature_hash=expected_feature_hash)
        except ScoringError as exc:
            msg = f"version {version} refused ({rejection_reason(exc)}): {one_line(exc)}"
            raise RegistryError(msg) from exc

    def rollback(self, label: Label = "stable") -> dict[str, int]:
        """``canary``: drop the canary label. ``stable``: back to the stable version before this one."""
        labels = self.labels()
        current = labels.get(label)
        if current is None:
            msg = f"no {label} label to roll back"
            raise RegistryError(msg)
        if label == "canary":
            del labels["canary"]
            self._save(labels, {"action": "rollback", "label": label, "version": None, "previous": current})
            return labels
        earlier = [
            e["previous"]
            for e in self.history()
            if e.get("label") == "stable"
            and e.get("version") == current
            and e.get("action") == "set"
            and isinstance(e.get("previous"), int)
            and (self.model_dir / str(e["previous"])).is_dir()
        ]
        if not earlier:
            msg = f"stable version {current} has no earlier stable version to roll back to"
            raise RegistryError(msg)
        labels["stable"] = earlier[-1]
        self._save(labels, {"action": "rollback", "label": label, "version": earlier[-1], "previous": current})
        return labels

    # --- promotion gate ----------------------------------------------------------------------------
    def gate(
        self,
        candidate: int,
        candidate_metrics: dict[str, float],
        stable_metrics: dict[str, float] | None,
        config: GateConfig,
    ) -> GateDecision:
        """Label a newly exported version.

        The first version of a model becomes ``stable`` (there is nothing to compare with, and the stream
        needs a model). Afterwards the candidate becomes ``canary`` only if its ``config.metric`` on the
        holdout beats the stable model's on the *same* holdout (``stable_metrics``, scored by the caller)
        by ``config.margin``; otherwise labels stay as they are.
        """
        value = candidate_metrics.get(config.metric)
        if "stable" not in self.labels():
            self.set_label("stable", candidate, reason="first version")
            return GateDecision("stable", "no stable version yet", value, None)
        base = None if stable_metrics is None else stable_metrics.get(config.metric)
        if value is None or math.isnan(value):
            return GateDecision(None, f"candidate has no {config.metric} on the holdout", value, base)
        if base is None or math.isnan(base):
            return GateDecision(None, f"stable model could not be scored on the holdout ({config.metric})", value, base)
        if value > base + config.margin:
            self.set_label(
                "canary", candidate, reason=f"gate: {config.metric} {value:.4f} > {base:.4f}+{config.margin}"
            )
            return GateDecision(
                "canary",
                f"{config.metric} {value:.4f} beats stable {base:.4f} by more than {config.margin}",
                value,
                base,
            )
        return GateDecision(
            None,
            f"{config.metric} {value:.4f} does not beat stable {base:.4f} by {config.margin}",
            value,
            base,
        )

    # --- TF Serving --------------------------------------------------------------------------------
    def _served_model_dir(self) -> str:
        if self.serving_base_path:
            return f"{self.serving_base_path.rstrip('/')}/{self.model_name}"
        return str(self.model_dir.resolve())

    def write_models_config(self) -> Path:
        labels = self.labels()
        served = sorted(set(labels.values()))
        lines = [
            "model_config_list {",
            "  config {",
            f'    name: "{self.model_name}"',
            f'    base_path: "{self._served_model_dir()}"',
            '    model_platform: "tensorflow"',
        ]
        if served:
            versions = " ".join(f"versions: {v}" for v in served)
            lines.append(f"    model_version_policy {{ specific {{ {versions} }} }}")
        lines += [f'    version_labels {{ key: "{k}" value: {v} }}' for k, v in sorted(labels.items())]
        lines += ["  }", "}", ""]
        path = self.repository / "models.config"
        self.repository.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, "\n".join(lines))
        return path

    def describe(self) -> dict[str, Any]:
        labels = self.labels()
        by_version = {v: k for k, v in labels.items()}
        rows = []
        for v in self.versions():
            meta = self.metadata(v)
            rows.append(
                {
                    "version": v,
                    "version_tag": meta.get("version_tag", f"v{v}"),
                    "label": by_version.get(v),
                    "created_at": meta.get("created_at"),
                    "metrics": meta.get("metrics", {}),
                    "training_window": meta.get("training_window", {}),
                }
            )
        return {
            "model_name": self.model_name,
            "repository": str(self.repository),
            "labels": labels,
            "versions": rows,
        }
