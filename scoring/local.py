"""The embedded default backend: a SavedModel loaded in-process from the model repository.

Hot swap: a background task polls the model directory (``labels.json`` and version directories) every
``poll_interval_s``. New versions are loaded off the event loop and verified (feature-list hash) before a
single attribute assignment publishes the new label → model view. A ``predict`` call takes the view once at
its start, so an in-flight batch finishes on the model it started with: nothing is dropped and nothing is
scored twice. A new version that cannot load, has a different feature-list hash or fails its warm-up
(scoring/vetting.py: an error, or NaN scores) is refused: logged at ERROR, reported to ``on_rejected`` (the
worker counts it on ``/metrics``), remembered so it is not loaded again, and the label keeps the version it
served before. A refused ``canary`` is an unassigned label: its share of traffic goes to ``stable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from scoring import repository
from scoring.backend import Prediction
from scoring.errors import FeatureHashMismatch, InvalidRequest, LabelNotFound, ModelNotFound, ScoringError
from scoring.vetting import one_line, rejection_reason, warm_up

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    version: int
    signature: Callable[..., Mapping[str, Any]]
    feature_list_hash: str | None
    feature_names: tuple[str, ...]
    handle: object
    """The loaded SavedModel object; keeps the signature's variables alive."""


def load_version(version_dir: Path, signature_name: str) -> LoadedModel:
    """Load one version directory (blocking: call it off the event loop)."""
    import tensorflow as tf

    try:
        handle = tf.saved_model.load(str(version_dir))
    except (OSError, ValueError, tf.errors.OpError) as exc:
        msg = f"cannot load SavedModel {version_dir}: {exc}"
        raise ModelNotFound(msg) from exc
    signatures = handle.signatures
    if signature_name not in signatures:
        msg = f"{version_dir} has no signature {signature_name!r} (has {sorted(signatures)})"
        raise InvalidRequest(msg)
    fhash: str | None = None
    names: tuple[str, ...] = ()
    if "metadata" in signatures:
        meta = signatures["metadata"]()
        fhash = meta["feature_list_hash"].numpy().decode()
        names = tuple(n.decode() for n in meta["feature_names"].numpy().tolist())
    else:
        feature_list = repository.read_metadata(version_dir).get("feature_list", {})
        fhash = feature_list.get("hash")
        names = tuple(feature_list.get("names", ()))
    return LoadedModel(int(version_dir.name), signatures[signature_name], fhash, names, handle)


def vet_version(version_dir: Path, *, expected_feature_hash: str | None,
                signature_name: str = "serving_default") -> LoadedModel:
    """Load one version and check that it may serve (blocking): its feature-list hash, then its warm-up.

    Raises ``ModelNotFound``/``InvalidRequest`` (cannot load), ``FeatureHashMismatch``, ``WarmupFailed``
    or ``NonFiniteOutput``; ``scoring.vetting.rejection_reason`` names which for a metric.
    """
    model = load_version(version_dir, signature_name)
    if expected_feature_hash is not None and model.feature_list_hash != expected_feature_hash:
        raise FeatureHashMismatch(
            model=f"{version_dir.parent.name} v{model.version}",
            model_hash=model.feature_list_hash,
            expected_hash=expected_feature_hash,
        )
    warm_up(model.signature, version_dir, len(model.feature_names) or _input_width(model))
    return model


def _input_width(model: LoadedModel) -> int:
    spec = model.signature.structured_input_signature[1]["features"]  # type: ignore[attr-defined]
    return int(spec.shape[-1])


RejectionHook = Callable[[str, int, str], None]
"""``(model_name, version, reason)`` of a refused version; must not raise."""


class LocalBackend:
    """``ModelBackend`` over a local model directory ``<repo>/<model_name>``."""

    def __init__(
        self,
        model_dir: Path,
        *,
        expected_feature_hash: str | None,
        signature: str = "serving_default",
        label: str | None = None,
        poll_interval_s: float = 2.0,
        threads: int = 1,
    ) -> None:
        self.model_dir = model_dir
        self.model_name = model_dir.name
        self.expected_feature_hash = expected_feature_hash
        self.feature_list_hash: str | None = expected_feature_hash
        self.signature = signature
        self.default_label = label or repository.STABLE
        self.poll_interval_s = poll_interval_s
        # TF releases the GIL while it computes; one thread keeps the event loop free without letting
        # several batches fight over the same cores.
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="scoring-local")
        # Loading a version takes ~0.5 s: a separate thread so scoring continues meanwhile.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring-load")
        self._state: repository.RepositoryState | None = None
        self._models: dict[int, LoadedModel] = {}
        self._view: dict[str, LoadedModel] = {}
        self._poller: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self._rejected: dict[int, str] = {}
        """Refused versions and why: a published version directory never changes, so it is not loaded
        (nor reported) again at every later change of the repository."""
        self.on_rejected: RejectionHook | None = None

    @property
    def labels(self) -> dict[str, int]:
        return {label: model.version for label, model in self._view.items()}

    @property
    def feature_names(self) -> tuple[str, ...]:
        model = self._view.get(self.default_label)
        return model.feature_names if model else ()

    async def start(self) -> None:
        await self.reload(strict=True)
        if self.poll_interval_s > 0:
            self._poller = asyncio.create_task(self._poll(), name=f"model-poll:{self.model_name}")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        self._executor.shutdown(wait=True)
        self._loader.shutdown(wait=True)

    async def predict(self, features: npt.NDArray[np.float32], *, label: str | None = None) -> Prediction:
        wanted = label or self.default_label
        model = self._view.get(wanted)  # taken once: a concurrent swap cannot change this batch's model
        if model is None:
            state = self._state
            if state is None:
                msg = "local backend not started"
                raise ScoringError(msg)
            version = state.resolve(wanted)  # raises LabelNotFound with the known labels
            # A label whose only version was refused is not assigned as far as serving goes: the scorer
            # sends its share to stable (LabelNotFound), rather than deciding it by rules only.
            why = self._rejected.get(version, "not loaded")
            msg = f"label {wanted!r} resolves to version {version}, which was refused ({why})"
            raise LabelNotFound(msg)
        features = _check_features(features, len(model.feature_names) or None)
        if features.shape[0] == 0:
            return _empty(features.shape[1], self.model_name, model.version, wanted)
        loop = asyncio.get_running_loop()
        scores, contributions = await loop.run_in_executor(self._executor, _run, model, features)
        return Prediction(scores, contributions, self.model_name, model.version, wanted)

    async def reload(self, *, strict: bool = False) -> bool:
        """Rescan the repository and swap in new versions/labels; True when the view changed.

        ``strict`` (start-up) raises on any problem; at runtime problems are logged and the current
        view keeps serving.
        """
        async with self._reload_lock:
            loop = asyncio.get_running_loop()
            state = await loop.run_in_executor(self._loader, repository.scan, self.model_dir)
            if state == self._state:
                return False
            label_map = state.label_map()
            if self.default_label not in label_map:
                state.resolve(self.default_label)  # raises LabelNotFound
            models = {v: m for v, m in self._models.items() if v in label_map.values()}
            view: dict[str, LoadedModel] = {}
            for lbl, version in label_map.items():
                if version not in models and version not in self._rejected:
                    try:
                        models[version] = await self._load_checked(version)
                    except ScoringError as exc:
                        if strict and lbl == self.default_label:
                            raise
                        self._reject(version, lbl, exc)
                if version not in models:
                    if lbl in self._view:  # keep serving what this label served before
                        view[lbl] = self._view[lbl]
                    continue
                view[lbl] = models[version]
            for kept in view.values():
                models.setdefault(kept.version, kept)
            self._models, self._view, self._state = models, view, state
            log.info("model %s labels now %s", self.model_name, self.labels)
            return True

    def _reject(self, version: int, label: str, exc: ScoringError) -> None:
        reason = rejection_reason(exc)
        self._rejected[version] = reason
        kept = self._view.get(label)
        log.error("model %s v%d refused for label %r (%s): %s; %s", self.model_name, version, label, reason,
                  one_line(exc), f"v{kept.version} keeps serving it" if kept else "the label stays unassigned")
        if self.on_rejected is not None:
            try:
                self.on_rejected(self.model_name, version, reason)
            except Exception:  # a metrics hook must never stop a reload
                log.exception("on_rejected hook failed")

    async def _load_checked(self, version: int) -> LoadedModel:
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(
            self._loader,
            functools.partial(vet_version, self.model_dir / str(version),
                              expected_feature_hash=self.expected_feature_hash, signature_name=self.signature),
        )
        if self.feature_list_hash is None:
            self.feature_list_hash = model.feature_list_hash
        return model

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.reload()
            except Exception:  # a poll must never kill the worker; the next poll tries again
                log.exception("model repository poll failed for %s", self.model_dir)


def _run(model: LoadedModel, features: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], Any]:
    import tensorflow as tf

    out = model.signature(features=tf.constant(features))
    scores = out["score"].numpy().astype(np.float32, copy=False).reshape(-1)
    contributions = None
    if "contributions" in out:
        contributions = out["contributions"].numpy().astype(np.float32, copy=False)
    return scores, contributions


def _check_features(features: npt.NDArray[np.float32], n_features: int | None) -> npt.NDArray[np.float32]:
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or (n_features is not None and features.shape[1] != n_features):
        msg = f"features must have shape (n, {n_features or 'F'}), got {features.shape}"
        raise InvalidRequest(msg)
    return features


def _empty(n_features: int, name: str, version: int | None, label: str | None) -> Prediction:
    return Prediction(np.zeros(0, np.float32), np.zeros((0, n_features), np.float32), name, version, label)
