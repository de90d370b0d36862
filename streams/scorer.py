"""What the pipeline needs from ``scoring/``: one call per micro-batch, a result per transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from schemas import Decision, ShadowScore


class ReasonLike(Protocol):
    @property
    def code(self) -> str: ...
    @property
    def feature(self) -> str: ...
    @property
    def contribution(self) -> float: ...


class ScoreResult(Protocol):
    @property
    def score(self) -> float: ...
    @property
    def decision(self) -> Decision: ...
    @property
    def reason_codes(self) -> Sequence[ReasonLike]: ...
    @property
    def rules_fired(self) -> list[str]: ...
    @property
    def model_name(self) -> str: ...
    @property
    def model_version(self) -> int | None: ...
    @property
    def model_label(self) -> str | None: ...
    @property
    def degraded(self) -> bool: ...
    @property
    def shadow(self) -> ShadowScore | None: ...


class BatchScorer(Protocol):
    async def score_batch(
        self, features: npt.NDArray[np.float32], *, ids: Sequence[str], card_refs: Sequence[str],
        amounts: Sequence[float], currencies: Sequence[str],
    ) -> Sequence[ScoreResult]: ...
