"""Decisions: thresholds, hard rules, reason codes.

The policy file (JSON, path in ``settings.policy_file``) is re-read when its modification time changes
(checked at most once per ``check_interval_s``); an invalid file is logged and the previous policy stays
in force, so a typo never stops scoring. Example::

    {"review_threshold": 0.5, "decline_threshold": 0.9,
     "blocked_cards": ["c0ffee..."], "amount_limits": {"EUR": 10000, "*": 20000},
     "review_amounts": {"EUR": 2000}, "degraded_review_amount": 500}

Rules beat the model: a blocked card or an amount above its currency's limit is declined whatever the
score; an amount above the review amount is at least reviewed. Reason codes are the (up to) three features
with the largest *positive* contribution (gradient × normalised input of the logit, computed in the serving
signature), coded ``R_<FEATURE_NAME_UPPER>``; see docs/scoring.md.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.scored import Decision
from scoring.errors import PolicyError

log = logging.getLogger(__name__)

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Amount = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
MAX_REASONS = 3
ANY_CURRENCY = "*"


class PolicyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    review_threshold: Probability = 0.5
    decline_threshold: Probability = 0.9
    blocked_cards: frozenset[str] = frozenset()
    """``card_ref`` values (keyed hashes) to decline."""
    amount_limits: dict[str, Amount] = {}
    """Currency → largest amount accepted; ``"*"`` for any other currency. Above: decline."""
    review_amounts: dict[str, Amount] = {}
    """Currency → amount above which a human reviews, whatever the score."""
    degraded_review_amount: Amount | None = 500.0
    """Rules-only mode (model outage): amounts above this are reviewed instead of approved."""

    @model_validator(mode="after")
    def _ordered(self) -> PolicyConfig:
        if self.review_threshold > self.decline_threshold:
            msg = "review_threshold must not exceed decline_threshold"
            raise ValueError(msg)
        return self


@functools.cache
def reason_code(feature: str) -> str:
    """The stable code of a feature: ``card_tx_count_1d`` → ``R_CARD_TX_COUNT_1D``."""
    return "R_" + re.sub(r"[^A-Z0-9]+", "_", feature.upper()).strip("_")


class Reason(NamedTuple):
    """A reason code as the hot path carries it: same fields as ``schemas.scored.ReasonCode``, but a tuple
    (building ~3 pydantic models per record cost a third of the scorer's CPU, measured with py-spy)."""

    code: str
    feature: str
    contribution: float


def top_reasons(
    contributions: npt.NDArray[np.float32], names: Sequence[str], k: int = MAX_REASONS
) -> list[list[Reason]]:
    """Per row, the up-to-``k`` features that pushed the score up most (largest positive contribution)."""
    n, f = contributions.shape
    if n == 0:
        return []
    k = min(k, f)
    values = np.where(np.isfinite(contributions), contributions, -np.inf)
    # Vectorised over the batch: argpartition picks the k winners in O(f), then only those k are sorted.
    top = np.argpartition(-values, k - 1, axis=1)[:, :k]
    top_values = np.take_along_axis(values, top, axis=1)
    order = np.argsort(-top_values, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1).tolist()
    top_values = np.take_along_axis(top_values, order, axis=1).tolist()
    catalogue = [(reason_code(name), name) for name in names]
    return [
        [Reason(catalogue[j][0], catalogue[j][1], v) for j, v in zip(row, row_values, strict=True) if v > 0]
        for row, row_values in zip(top, top_values, strict=True)
    ]


class Policy:
    """Applies one ``PolicyConfig``."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config

    def _limit(self, table: dict[str, float], currency: str) -> float | None:
        return table.get(currency, table.get(ANY_CURRENCY))

    def rules(self, card_ref: str, amount: float, currency: str) -> tuple[list[str], Decision | None]:
        """Hard rules that fired, and the decision they force (``None``: the score decides)."""
        fired: list[str] = []
        forced: Decision | None = None
        if card_ref in self.config.blocked_cards:
            fired.append("BLOCKED_CARD")
            forced = "decline"
        limit = self._limit(self.config.amount_limits, currency)
        if limit is not None and amount > limit:
            fired.append(f"AMOUNT_LIMIT_{currency}")
            forced = "decline"
        review = self._limit(self.config.review_amounts, currency)
        if review is not None and amount > review:
            fired.append(f"REVIEW_AMOUNT_{currency}")
            forced = forced or "review"
        return fired, forced

    def decide(self, score: float, card_ref: str, amount: float, currency: str) -> tuple[Decision, list[str]]:
        fired, forced = self.rules(card_ref, amount, currency)
        by_score: Decision = (
            "decline"
            if score >= self.config.decline_threshold
            else "review"
            if score >= self.config.review_threshold
            else "approve"
        )
        return _stricter(by_score, forced), fired

    def decide_degraded(self, card_ref: str, amount: float, currency: str) -> tuple[float, Decision, list[str]]:
        """Rules only (model unavailable). The score is the threshold the decision corresponds to (0 for
        approve), so score dashboards stay consistent; ``degraded: true`` says it is not a model score."""
        fired, forced = self.rules(card_ref, amount, currency)
        decision: Decision = forced or "approve"
        cap = self.config.degraded_review_amount
        if decision == "approve" and cap is not None and amount > cap:
            fired.append("DEGRADED_REVIEW_AMOUNT")
            decision = "review"
        score = {"approve": 0.0, "review": self.config.review_threshold, "decline": 1.0}[decision]
        return score, decision, ["DEGRADED", *fired]


_RANK: dict[Decision, int] = {"approve": 0, "review": 1, "decline": 2}


def _stricter(a: Decision, b: Decision | None) -> Decision:
    return a if b is None or _RANK[a] >= _RANK[b] else b


def load_policy(path: Path) -> PolicyConfig:
    try:
        return PolicyConfig.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        msg = f"policy file {path} is invalid: {exc}"
        raise PolicyError(msg) from exc


class PolicyStore:
    """The current policy, reloaded from ``path`` when the file changes (no restart needed)."""

    def __init__(self, path: Path | None, *, check_interval_s: float = 1.0) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self._policy = Policy(load_policy(path) if path is not None else PolicyConfig())
        self._mtime = self._stat()
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int] | None:
        # Modification time in ns and size: an edit within the same clock tick still changes the size.
        try:
            stat = self.path.stat() if self.path is not None else None
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size) if stat is not None else None

    def current(self) -> Policy:
        now = time.monotonic()
        if self.path is None or now - self._checked < self.check_interval_s:
            return self._policy
        self._checked = now
        mtime = self._stat()
        if mtime is not None and mtime != self._mtime:
            try:
                self._policy = Policy(load_policy(self.path))
                log.info("policy reloaded from %s", self.path)
            except PolicyError as exc:
                log.error("%s; keeping the previous policy", exc)
            self._mtime = mtime
        return self._policy
