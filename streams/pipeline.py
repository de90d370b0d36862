"""One micro-batch of the ``transactions`` topic: validate → features → score → publish.

``handle`` returns only when every message of the batch is published to ``scored-transactions`` or
``transactions-dlq`` and acknowledged by the broker, so faust may ack (commit) the batch afterwards.
Infrastructure failures (Redis, Kafka) are retried here with backoff — the stream pauses, nothing is
skipped; a crash before the return leaves the batch uncommitted, and the redelivery is idempotent in the
feature state (per transaction id).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from features.events import TransactionEvent
from features.store import OnlineFeatureStore
from schemas import SCHEMA_VERSION, Latencies, Transaction, transaction_context
from schemas.codec import Rejection, dead_letter, decode, encode
from streams.identity import CardHasher
from streams.messages import InboundMessage, OutboundMessage, Publisher
from streams.retry import retry_forever
from streams.scorer import BatchScorer, ScoreResult

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    scored_topic: str
    dead_letter_topic: str
    feature_names: tuple[str, ...]
    feature_list_hash: str
    max_message_bytes: int = 64 * 1024
    max_clock_skew_s: float = 86_400.0


@dataclass
class BatchOutcome:
    consumed: int = 0
    scored: int = 0
    dead_lettered: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)
    latencies: Latencies = field(default_factory=Latencies)
    features: npt.NDArray[np.float32] | None = None
    """The (scored rows × features) matrix the model saw, for feature-drift sketches."""
    models: Counter[tuple[str, int | None, str | None]] = field(default_factory=Counter)
    degraded: int = 0
    publish_s: float = 0.0


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def asdict_latencies(latencies: Latencies) -> dict[str, float]:
    return {"validate_ms": latencies.validate_ms, "features_ms": latencies.features_ms,
            "model_ms": latencies.model_ms, "end_to_end_ms": latencies.end_to_end_ms}


@dataclass(slots=True)
class CheckedMessage:
    """A message after validation, before the feature state: a transaction, or why it is rejected."""

    message: InboundMessage
    result: tuple[Transaction, TransactionEvent] | Rejection
    validate_s: float
    """This message's share of its chunk's validation time."""


@dataclass
class PreparedBatch:
    """A micro-batch between its stages: validated and sent to the feature state (``start``), then with
    its features (``complete``), not yet scored or published."""

    messages: Sequence[InboundMessage]
    outcome: BatchOutcome
    out: list[OutboundMessage] = field(default_factory=list)
    """Dead letters so far; the scored records are appended by ``finish``."""
    events: list[TransactionEvent] = field(default_factory=list)
    transactions: list[Transaction] = field(default_factory=list)
    validate_s: float = 0.0
    features_s: float = 0.0
    started_s: float = 0.0
    pending: Any = None
    """The feature store's handle of the submitted batch, until ``complete``."""


class RecordPath(Protocol):
    """How a micro-batch's transactions meet Redis, the model and the broker. The worker's is
    ``BatchedPath``; the benchmark's per-record baselines (``fraudstream/bench_baselines.py``) are others.
    Each step retries infrastructure failures itself (the stream pauses, nothing is skipped)."""

    async def submit(self, store: OnlineFeatureStore, events: list[TransactionEvent]) -> Any:
        """Send the batch to the feature state (batches in order); returns what ``features`` needs."""

    async def features(
        self, store: OnlineFeatureStore, events: list[TransactionEvent], pending: Any
    ) -> npt.NDArray[np.float64]:
        """The batch's feature vectors, one row per event."""

    async def score(
        self, scorer: BatchScorer, vectors: npt.NDArray[np.float32], events: list[TransactionEvent],
        txs: list[Transaction],
    ) -> Sequence[ScoreResult]: ...

    async def publish(self, publisher: Publisher, out: list[OutboundMessage]) -> None:
        """Returns once the broker acknowledged every message (the batch is acked after this)."""


class BatchedPath:
    """The worker's path: one pipelined Redis write and read, one model call and one publish per batch."""

    async def submit(self, store: OnlineFeatureStore, events: list[TransactionEvent]) -> Any:
        return await retry_forever(lambda: store.submit(events), what="feature state in Redis")

    async def features(
        self, store: OnlineFeatureStore, events: list[TransactionEvent], pending: Any
    ) -> npt.NDArray[np.float64]:
        return await retry_forever(partial(store.collect, pending), what="feature state in Redis")

    async def score(
        self, scorer: BatchScorer, vectors: npt.NDArray[np.float32], events: list[TransactionEvent],
        txs: list[Transaction],
    ) -> Sequence[ScoreResult]:
        return await scorer.score_batch(
            vectors, ids=[t.transaction_id for t in txs], card_refs=[e.card_ref for e in events],
            amounts=[t.amount for t in txs], currencies=[t.currency for t in txs],
        )

    async def publish(self, publisher: Publisher, out: list[OutboundMessage]) -> None:
        await retry_forever(lambda: publisher.publish(out), what="publish to Kafka")


class TransactionPipeline:
    def __init__(
        self, config: PipelineConfig, *, features: OnlineFeatureStore, scorer: BatchScorer,
        publisher: Publisher, hasher: CardHasher, path: RecordPath | None = None,
    ) -> None:
        self.config = config
        self.features = features
        self.scorer = scorer
        self.publisher = publisher
        self.hasher = hasher
        self.path: RecordPath = path or BatchedPath()

    async def handle(self, messages: Sequence[InboundMessage]) -> BatchOutcome:
        """The whole micro-batch; returns once everything is published and acknowledged."""
        return await self.finish(await self.prepare(self.check(messages)))

    def check(self, messages: Sequence[InboundMessage]) -> list[CheckedMessage]:
        """Stage 0: decode and validate. Needs no order and no I/O, so the worker runs it as messages arrive,
        while Redis works on the batch before: what ``prepare`` does between two Redis round trips (and
        Redis sits idle for) is then only the round trip's own work."""
        t0 = time.perf_counter()
        context = transaction_context(datetime.now(UTC), self.config.max_clock_skew_s)
        checked: list[CheckedMessage] = []
        for message in messages:
            parsed = decode(Transaction, message.value, max_bytes=self.config.max_message_bytes, context=context)
            if isinstance(parsed, Rejection):
                checked.append(CheckedMessage(message, parsed, 0.0))
                continue
            event = TransactionEvent(
                transaction_id=parsed.transaction_id, card_ref=self.hasher.reference(parsed.card_id),
                terminal_id=parsed.terminal_id, event_time=parsed.event_time.timestamp(),
                amount=parsed.amount, latitude=parsed.latitude, longitude=parsed.longitude,
            )
            checked.append(CheckedMessage(message, (parsed, event), 0.0))
        share = (time.perf_counter() - t0) / max(1, len(checked))
        for item in checked:
            item.validate_s = share
        return checked

    async def prepare(self, checked: Sequence[CheckedMessage]) -> PreparedBatch:
        """Stage 1: apply the checked messages to the feature state (Redis) and read their features."""
        return await self.complete(await self.start(checked))

    async def start(self, checked: Sequence[CheckedMessage]) -> PreparedBatch:
        """Stage 1a: send the checked messages to the feature state. Batches must be started in order, and
        the next may start before this one completes. A transaction id repeated within the batch is
        dead-lettered: scored once, published once."""
        batch = PreparedBatch(messages=[c.message for c in checked], outcome=BatchOutcome(consumed=len(checked)))
        seen: set[str] = set()
        for item in checked:
            batch.validate_s += item.validate_s
            result = item.result
            if not isinstance(result, Rejection) and result[0].transaction_id in seen:
                result = Rejection("validate", "duplicate:transaction_id", "transaction id repeated in the batch")
            if isinstance(result, Rejection):
                self._dead_letter(item.message, result, batch.out, batch.outcome)
                continue
            tx, event = result
            seen.add(tx.transaction_id)
            batch.transactions.append(tx)
            batch.events.append(event)
        batch.started_s = time.perf_counter()
        if batch.events:
            batch.pending = await self.path.submit(self.features, batch.events)
        return batch

    async def complete(self, batch: PreparedBatch) -> PreparedBatch:
        """Stage 1b: the started batch's features. Batches complete in the order they started."""
        if batch.events:
            vectors = await self.path.features(self.features, batch.events, batch.pending)
            batch.outcome.features = vectors.astype(np.float32)
        batch.features_s = time.perf_counter() - batch.started_s
        return batch

    async def finish(self, batch: PreparedBatch) -> BatchOutcome:
        """Stage 2: score, build the records, publish. May overlap the next batch's ``prepare``."""
        outcome, valid, valid_messages = batch.outcome, batch.events, batch.transactions
        out = batch.out
        t2 = time.perf_counter()
        if valid and outcome.features is not None:
            results = await self.path.score(self.scorer, outcome.features, valid, valid_messages)
        t3 = time.perf_counter()
        if valid:
            now = datetime.now(UTC)
            produced_at = [m.timestamp for m in batch.messages if m.timestamp is not None]
            end_to_end = (now.timestamp() - min(produced_at)) * 1000 if produced_at else 0.0
            latencies = Latencies(
                validate_ms=batch.validate_s * 1000, features_ms=batch.features_s * 1000,
                model_ms=(t3 - t2) * 1000, end_to_end_ms=end_to_end,
            )
            outcome.latencies = latencies
            common: dict[str, object] = {"latencies": asdict_latencies(latencies), "scored_at": _iso(now)}
            for tx, event, result in zip(valid_messages, valid, results, strict=True):
                out.append(OutboundMessage(self.config.scored_topic, event.card_ref.encode(),
                                           self._scored_json(tx, event, result, common)))
                outcome.decisions[result.decision] = outcome.decisions.get(result.decision, 0) + 1
                outcome.models[(result.model_name, result.model_version, result.model_label)] += 1
                outcome.degraded += bool(result.degraded)
            outcome.scored = len(valid)
        t4 = time.perf_counter()
        await self.path.publish(self.publisher, out)
        outcome.publish_s = time.perf_counter() - t4
        return outcome

    def _scored_json(
        self, tx: Transaction, event: TransactionEvent, result: ScoreResult, common: dict[str, object]
    ) -> bytes:
        """One ``ScoredTransaction`` as JSON. Built as a dict and encoded with orjson: constructing and
        dumping a pydantic model per record costs more than the rest of the record's path; the contract
        tests parse these bytes back with ``ScoredTransaction``. orjson writes the (UTC) event time itself,
        as ``_iso`` would, without a Python call per record."""
        shadow = result.shadow
        return orjson.dumps({
            "schema_version": SCHEMA_VERSION, "transaction_id": tx.transaction_id, "card_ref": event.card_ref,
            "terminal_id": tx.terminal_id, "amount": tx.amount, "currency": tx.currency,
            "event_time": tx.event_time, "score": float(result.score), "decision": result.decision,
            "reason_codes": [
                {"code": r.code, "feature": r.feature, "contribution": float(r.contribution)}
                for r in result.reason_codes
            ],
            "rules_fired": list(result.rules_fired), "model_name": result.model_name,
            "model_version": result.model_version, "model_label": result.model_label,
            "degraded": bool(result.degraded),
            "shadow": None if shadow is None else {"model_version": shadow.model_version, "score": shadow.score},
            "feature_list_hash": self.config.feature_list_hash, **common,
        }, option=orjson.OPT_UTC_Z)

    def _dead_letter(
        self, message: InboundMessage, rejection: Rejection, out: list[OutboundMessage], outcome: BatchOutcome
    ) -> None:
        record = dead_letter(
            rejection, message.value, topic=message.topic, partition=message.partition, offset=message.offset
        )
        # The DLQ is keyed by topic/partition, never by the (clear) card id the raw message may hold.
        key = f"{message.topic}:{message.partition}".encode()
        out.append(OutboundMessage(self.config.dead_letter_topic, key, encode(record)))
        outcome.dead_lettered += 1
        outcome.reasons[rejection.reason] = outcome.reasons.get(rejection.reason, 0) + 1
