"""The pass-through ``RecordPath`` of ``fraudstream bench e2e`` (``FRAUD_PIPELINE_MODE=echo``): the ceiling
of the worker's I/O path.

The same worker process, consumer, chunking, validation, record building and publisher as the batched
pipeline; what it leaves out is everything that meets Redis (id claims, the feature state, stored results)
and the model: each valid transaction gets a vector of zeros and a fixed score. ``echo_tps`` /
``throughput_tps`` then says how much of the worker's ceiling the features and the model take.

Benchmark code, not a production setting: it claims no ids, so a redelivery would be published twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from features import FEATURE_LIST
from features.events import TransactionEvent
from features.ids import Claim, ClaimResult, TransactionIds
from features.store import OnlineFeatureStore
from schemas import Transaction
from scoring.scorer import ScoreResult as Scored
from streams.messages import OutboundMessage, Publisher
from streams.pipeline import BatchedPath, RecordPath
from streams.scorer import BatchScorer, ScoreResult

ECHO_MODEL = "echo"


class EchoPath:
    """Decode, validate, publish: features and model replaced by a pass-through; publishing as the worker's."""

    def __init__(self, feature_count: int, feature_list_hash: str) -> None:
        self.feature_count = feature_count
        self.feature_list_hash = feature_list_hash
        """Given, not read per record: ``FEATURE_LIST.hash`` is computed on each access (~2.7 ms; read per
        record it made the first echo runs 10x slower than the batched pipeline)."""
        self._publish = BatchedPath().publish

    async def claim(self, ids: TransactionIds, claims: list[Claim]) -> list[ClaimResult]:
        return [ClaimResult("new", None) for _ in claims]

    async def record_outcomes(self, ids: TransactionIds, stored: list[tuple[str, bytes]]) -> None:
        return None

    async def submit(self, store: OnlineFeatureStore, events: list[TransactionEvent]) -> Any:
        return None

    async def features(
        self, store: OnlineFeatureStore, events: list[TransactionEvent], pending: Any
    ) -> npt.NDArray[np.float64]:
        return np.zeros((len(events), self.feature_count))

    async def score(
        self, scorer: BatchScorer, vectors: npt.NDArray[np.float32], events: list[TransactionEvent],
        txs: list[Transaction],
    ) -> Sequence[ScoreResult]:
        return [Scored(transaction_id=tx.transaction_id, score=0.0, decision="approve", reason_codes=[],
                       rules_fired=[], model_name=ECHO_MODEL, model_version=None, model_label=None, degraded=False,
                       shadow=None, feature_list_hash=self.feature_list_hash) for tx in txs]

    async def publish(self, publisher: Publisher, out: list[OutboundMessage]) -> None:
        await self._publish(publisher, out)


async def echo_path() -> RecordPath:
    return EchoPath(len(FEATURE_LIST.names), FEATURE_LIST.hash)
