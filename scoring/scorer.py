"""``Scorer``: the one object the worker uses to turn feature vectors into decisions.

Path of a batch: rollout split (stable / canary by transaction-id hash) → micro-batcher → resilient
predictor (retry while the model is down, then ``ModelOutage``) → backend; optional shadow scoring by the
challenger; then the decision policy (thresholds, hard rules, reason codes). Rows whose model call gave up
are decided by rules only and marked ``degraded``: every input row gets exactly one result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception, stop_before_delay, wait_exponential

from schemas.scored import Decision, ShadowScore
from scoring.backend import ModelBackend, Prediction
from scoring.batcher import MicroBatcher
from scoring.errors import LabelNotFound, ScoringError
from scoring.factory import open_backend
from scoring.policy import PolicyStore, Reason, top_reasons
from scoring.resilience import ModelOutage, ResilientPredictor
from scoring.rollout import RolloutConfig, canary_mask

if TYPE_CHECKING:
    from config.settings import Settings

log = logging.getLogger(__name__)
LABEL_RECHECK_S = 10.0


@dataclass(frozen=True, slots=True)
class ScoreResult:
    transaction_id: str
    score: float
    decision: Decision
    reason_codes: list[Reason]
    rules_fired: list[str]
    model_name: str
    model_version: int | None
    model_label: str | None
    degraded: bool
    shadow: ShadowScore | None
    feature_list_hash: str
    model_ms: float = 0.0

    def record_fields(self) -> dict[str, Any]:
        """The ``ScoredTransaction`` fields this result fills (the worker adds ids, amounts, times)."""
        return {
            "score": self.score,
            "decision": self.decision,
            "reason_codes": [r._asdict() for r in self.reason_codes],
            "rules_fired": self.rules_fired,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_label": self.model_label,
            "degraded": self.degraded,
            "shadow": self.shadow,
            "feature_list_hash": self.feature_list_hash,
        }


@dataclass(slots=True)
class ScorerStats:
    rows: int = 0
    degraded_rows: int = 0
    canary_rows: int = 0
    shadow_failures: int = 0
    by_decision: dict[str, int] = field(default_factory=lambda: {"approve": 0, "review": 0, "decline": 0})


class Scorer:
    def __init__(
        self,
        backend: ModelBackend,
        *,
        model_name: str,
        feature_names: Sequence[str],
        feature_hash: str,
        policy: PolicyStore | None = None,
        rollout: RolloutConfig | None = None,
        grace_s: float = 30.0,
        max_batch: int = 256,
        max_wait_s: float = 0.005,
        max_in_flight: int = 4,
        shadow_timeout_s: float = 1.0,
    ) -> None:
        self.backend = backend
        self.model_name = model_name
        self.feature_names = tuple(feature_names)
        self.feature_hash = feature_hash
        self.policy = policy or PolicyStore(None)
        self.rollout = rollout or RolloutConfig()
        self.predictor = ResilientPredictor(backend, grace_s=grace_s)
        self.batcher = MicroBatcher(
            self.predictor.predict, max_size=max_batch, max_wait_s=max_wait_s, max_in_flight=max_in_flight
        )
        self.shadow_timeout_s = shadow_timeout_s
        self.stats = ScorerStats()
        self._label_missing_until: dict[str, float] = {}
        """Labels found unassigned, and until when not to ask for them again (one failed call per
        ``LABEL_RECHECK_S`` instead of one per batch while no canary is deployed)."""

    @property
    def on_backend_error(self) -> Callable[[ScoringError], None] | None:
        """Hook called with each failed model call attempt, e.g.
        ``scorer.on_backend_error = lambda exc: metrics.backend_error("model", type(exc).__name__)``."""
        return self.predictor.on_error

    @on_backend_error.setter
    def on_backend_error(self, hook: Callable[[ScoringError], None] | None) -> None:
        self.predictor.on_error = hook

    @property
    def on_model_rejected(self) -> Callable[[str, int, str], None] | None:
        """Hook called with ``(model_name, version, reason)`` of each version the backend's hot reload
        refused (only the embedded backend reloads; TF Serving loads versions itself)."""
        hook: Callable[[str, int, str], None] | None = getattr(self.backend, "on_rejected", None)
        return hook

    @on_model_rejected.setter
    def on_model_rejected(self, hook: Callable[[str, int, str], None] | None) -> None:
        if hasattr(self.backend, "on_rejected"):
            self.backend.on_rejected = hook

    @classmethod
    def from_settings(cls, settings: Settings, feature_names: Sequence[str], feature_hash: str) -> Scorer:
        model = settings.model
        backend = open_backend(model, expected_feature_hash=feature_hash)
        return cls(
            backend,
            model_name=model.model_name,
            feature_names=feature_names,
            feature_hash=feature_hash,
            policy=PolicyStore(settings.policy_file),
            rollout=RolloutConfig(canary_share=settings.canary_share, shadow=settings.shadow),
            grace_s=model.outage_grace_s,
            max_batch=settings.worker.batch_max_size,
            max_wait_s=settings.worker.batch_max_wait_s,
            max_in_flight=settings.worker.max_batches_in_flight,
        )

    @property
    def degraded(self) -> bool:
        return self.predictor.degraded

    async def start(self, *, wait_s: float | None = None) -> None:
        """Start the backend, retrying while it is unreachable for up to ``wait_s`` (default: the outage
        grace period), so workers and model server may start in any order.

        Raises ``FeatureHashMismatch`` (never retried) when the model's feature list differs.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, ScoringError) and exc.retryable),
            wait=wait_exponential(multiplier=0.1, max=2.0),  # 0.1, 0.2, 0.4 ... 2 s
            stop=stop_before_delay(self.predictor.grace_s if wait_s is None else wait_s),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        await retrying(self.backend.start)

    async def close(self) -> None:
        await self.batcher.close()
        await self.backend.close()

    async def score_batch(
        self,
        features: npt.NDArray[np.float32] | npt.NDArray[np.float64],
        *,
        ids: Sequence[str],
        card_refs: Sequence[str],
        amounts: Sequence[float],
        currencies: Sequence[str],
    ) -> list[ScoreResult]:
        """One result per row, in input order. Blocks (the stream pauses) while the model is retried."""
        features = np.asarray(features, dtype=np.float32)
        n = len(ids)
        lengths = {len(card_refs), len(amounts), len(currencies), n}
        if features.shape != (n, len(self.feature_names)) or lengths != {n}:
            msg = f"score_batch: features {features.shape} vs {n} ids × {len(self.feature_names)} features"
            raise ValueError(msg)
        if n == 0:
            return []
        canary_share = self.rollout.canary_share if self._label_available(self.rollout.canary_label) else 0.0
        canary = canary_mask(ids, canary_share)
        groups = [(None, np.flatnonzero(~canary)), (self.rollout.canary_label, np.flatnonzero(canary))]
        groups = [(label, idx) for label, idx in groups if idx.size]
        shadow_task = None
        if self.rollout.shadow and not self.degraded and self._label_available(self.rollout.canary_label):
            shadow_task = asyncio.ensure_future(self._shadow(features))
        outcomes = await asyncio.gather(*(self._score_group(features[idx], label) for label, idx in groups))
        shadow = await shadow_task if shadow_task is not None else None
        policy = self.policy.current()
        results: list[ScoreResult | None] = [None] * n
        for (_label, idx), (prediction, model_ms) in zip(groups, outcomes, strict=True):
            reasons = (
                top_reasons(prediction.contributions, self.feature_names)
                if prediction is not None and prediction.contributions is not None
                else [[] for _ in idx]
            )
            for pos, row in enumerate(idx.tolist()):
                score = float(prediction.scores[pos]) if prediction is not None else float("nan")
                shadow_score = (
                    ShadowScore(model_version=shadow.model_version, score=float(shadow.scores[row]))
                    if shadow is not None
                    else None
                )
                if prediction is not None and np.isfinite(score):
                    decision, fired = policy.decide(score, card_refs[row], amounts[row], currencies[row])
                    results[row] = ScoreResult(
                        ids[row],
                        min(max(score, 0.0), 1.0),
                        decision,
                        reasons[pos],
                        fired,
                        prediction.model_name,
                        prediction.model_version,
                        prediction.model_label,
                        False,
                        shadow_score,
                        self.feature_hash,
                        model_ms,
                    )
                else:
                    rscore, decision, fired = policy.decide_degraded(card_refs[row], amounts[row], currencies[row])
                    results[row] = ScoreResult(
                        ids[row],
                        rscore,
                        decision,
                        [],
                        fired,
                        self.model_name,
                        None,
                        None,
                        True,
                        shadow_score,
                        self.feature_hash,
                        model_ms,
                    )
        final = [r for r in results if r is not None]
        self._count(final, int(canary.sum()))
        return final

    async def _score_group(self, rows: npt.NDArray[np.float32], label: str | None) -> tuple[Prediction | None, float]:
        started = time.perf_counter()
        try:
            try:
                prediction: Prediction | None = await self.batcher.score(rows, label=label)
            except LabelNotFound:
                if label is None:
                    raise
                self._label_missing(label)
                prediction = await self.batcher.score(rows, label=None)
        except ModelOutage as exc:
            log.warning("rules-only scoring for %d rows: %s", rows.shape[0], exc)
            prediction = None
        except ScoringError as exc:
            # Not retryable (e.g. an incompatible model appeared on the server): decide by rules rather
            # than stop the stream; the error is logged loudly and the records say degraded.
            log.error("model call failed, rules-only scoring for %d rows: %s", rows.shape[0], exc)
            prediction = None
        return prediction, (time.perf_counter() - started) * 1000.0

    async def _shadow(self, features: npt.NDArray[np.float32]) -> Prediction | None:
        """The challenger's scores for every row; any failure only loses the shadow scores."""
        try:
            return await asyncio.wait_for(
                self.backend.predict(features, label=self.rollout.canary_label), self.shadow_timeout_s
            )
        except LabelNotFound:
            self._label_missing(self.rollout.canary_label)
            return None
        except (ScoringError, TimeoutError) as exc:
            self.stats.shadow_failures += 1
            log.debug("shadow scoring failed: %s", exc)
            return None

    def _label_available(self, label: str) -> bool:
        return self._label_missing_until.get(label, 0.0) <= time.monotonic()

    def _label_missing(self, label: str) -> None:
        if label not in self._label_missing_until:
            log.warning(
                "label %r not assigned; its share goes to the stable model (rechecked every %.0fs)",
                label,
                LABEL_RECHECK_S,
            )
        self._label_missing_until[label] = time.monotonic() + LABEL_RECHECK_S

    def _count(self, results: Sequence[ScoreResult], canary_rows: int) -> None:
        self.stats.rows += len(results)
        self.stats.canary_rows += canary_rows
        for result in results:
            self.stats.degraded_rows += result.degraded
            self.stats.by_decision[result.decision] += 1
