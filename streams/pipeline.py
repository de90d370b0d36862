"""One micro-batch of the ``transactions`` topic: validate → features → score → publish.

``handle`` returns only when every message of the batch is published to ``scored-transactions`` or
``transactions-dlq`` and acknowledged by the broker, so faust may ack (commit) the batch afterwards.
Infrastructure failures (Redis, Kafka) are retried here with backoff — the stream pauses, nothing is
skipped; a crash before the return leaves the batch uncommitted, and the redelivery is idempotent in the
feature state (per transaction id).

One transaction id, one outcome (``features/ids.py``): before the feature state, every id is claimed with
its content's fingerprint. A repeat of the same content (a redelivery, here or in another batch, worker or
restart) gets the first published result again, byte for byte but for its latencies and time, and changes
no state; while the first is not published yet, the repeat gets the first feature vector back from the
feature state and is scored. The same id with different content is dead-lettered as
``duplicate:transaction_id:conflict``, never scored.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from math import nan
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from features.events import TransactionEvent
from features.ids import Claim, ClaimResult, TransactionIds
from features.store import OnlineFeatureStore
from schemas import Latencies, Transaction, transaction_context
from schemas.codec import Rejection, decode
from streams.identity import CardHasher, content_hash
from streams.messages import InboundMessage, OutboundMessage, Publisher
from streams.outputs import (
    conflict_message,
    dead_letter_message,
    decode_result,
    encode_result,
    result_fields,
    scored_json,
)
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
    stage_timings: bool = True
    """Scored records carry ``timings`` (settings.scored_stage_timings); the histograms are kept either way."""


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
    stages: RecordStages | None = None
    """Where the published records' time went, for the worker's per-stage histograms."""


@dataclass(slots=True)
class RecordStages:
    """Seconds the published records of one batch spent in each stage (``schemas.scored.StageTimings``): per
    record where records differ (``fetch``: only records with a Kafka timestamp), once where the batch's
    records share the stage; ``records`` is how many records each shared value stands for."""

    fetch_s: npt.NDArray[np.float64]
    batch_wait_s: npt.NDArray[np.float64]
    features_s: float
    score_wait_s: float
    model_s: float
    publish_s: float
    records: int


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def asdict_latencies(latencies: Latencies) -> dict[str, float]:
    return {"validate_ms": latencies.validate_ms, "features_ms": latencies.features_ms,
            "model_ms": latencies.model_ms, "end_to_end_ms": latencies.end_to_end_ms}


@dataclass(frozen=True, slots=True)
class Checked:
    """A valid transaction, its feature event and its content fingerprint."""

    transaction: Transaction
    event: TransactionEvent
    content_hash: str


@dataclass(slots=True)
class CheckedMessage:
    """A message after validation, before the feature state: a transaction, or why it is rejected."""

    message: InboundMessage
    result: Checked | Rejection
    validate_s: float
    """This message's share of its chunk's validation time."""
    fetched_at: float = 0.0
    """Wall-clock time its fetch was handed over (``Chunk.fetched_at``)."""


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
    repeats: list[tuple[Transaction, str, bytes]] = field(default_factory=list)
    """Repeats of transactions whose result is stored: (transaction, card_ref, the stored result)."""
    arrived: list[tuple[float, float]] = field(default_factory=list)
    """(Kafka timestamp or NaN, fetched at) of each of ``transactions``, then of each of ``repeats``."""
    repeat_arrived: list[tuple[float, float]] = field(default_factory=list)
    started_at: float = 0.0
    """Wall-clock stamps (``time.time()``) of the batch's stages, for the records' ``timings``."""
    features_at: float = 0.0
    validate_s: float = 0.0
    features_s: float = 0.0
    started_s: float = 0.0
    pending: Any = None
    """The feature store's handle of the submitted batch, until ``complete``."""


class RecordPath(Protocol):
    """How a micro-batch's transactions meet Redis, the model and the broker. The worker's is
    ``BatchedPath``; the benchmark's per-record baselines (``fraudstream/bench/baselines.py``) are others.
    Each step retries infrastructure failures itself (the stream pauses, nothing is skipped)."""

    async def claim(self, ids: TransactionIds, claims: list[Claim]) -> list[ClaimResult]:
        """Claim the batch's transaction ids (first content wins), in order."""

    async def record_outcomes(self, ids: TransactionIds, stored: list[tuple[str, bytes]]) -> None:
        """Store the published results, so a repeat of an id gets its first result."""

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

    async def claim(self, ids: TransactionIds, claims: list[Claim]) -> list[ClaimResult]:
        return await retry_forever(partial(ids.claim, claims), what="transaction ids in Redis")

    async def record_outcomes(self, ids: TransactionIds, stored: list[tuple[str, bytes]]) -> None:
        await retry_forever(partial(ids.record_outcomes, stored), what="transaction results in Redis")

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
        self, config: PipelineConfig, *, features: OnlineFeatureStore, ids: TransactionIds, scorer: BatchScorer,
        publisher: Publisher, hasher: CardHasher, path: RecordPath | None = None,
    ) -> None:
        self.config = config
        self.features = features
        self.ids = ids
        self.scorer = scorer
        self.publisher = publisher
        self.hasher = hasher
        self.path: RecordPath = path or BatchedPath()

    async def handle(self, messages: Sequence[InboundMessage]) -> BatchOutcome:
        """The whole micro-batch; returns once everything is published and acknowledged."""
        return await self.finish(await self.prepare(self.check(messages)))

    def check(self, messages: Sequence[InboundMessage], *, fetched_at: float | None = None) -> list[CheckedMessage]:
        """Stage 0: decode and validate. Needs no order and no I/O, so the worker runs it as messages arrive,
        while Redis works on the batch before: what ``prepare`` does between two Redis round trips (and
        Redis sits idle for) is then only the round trip's own work. ``fetched_at``: when the messages'
        fetch was handed over (default: now)."""
        t0 = time.perf_counter()
        fetched = time.time() if fetched_at is None else fetched_at
        context = transaction_context(datetime.now(UTC), self.config.max_clock_skew_s)
        checked: list[CheckedMessage] = []
        for message in messages:
            parsed = decode(Transaction, message.value, max_bytes=self.config.max_message_bytes, context=context)
            if isinstance(parsed, Rejection):
                checked.append(CheckedMessage(message, parsed, 0.0, fetched))
                continue
            card_ref = self.hasher.reference(parsed.card_id)
            event_time = parsed.event_time.timestamp()
            event = TransactionEvent(
                transaction_id=parsed.transaction_id, card_ref=card_ref, terminal_id=parsed.terminal_id,
                event_time=event_time, amount=parsed.amount, latitude=parsed.latitude, longitude=parsed.longitude,
            )
            fingerprint = content_hash(card_ref, parsed.terminal_id, parsed.amount, parsed.currency, event_time,
                                       parsed.latitude, parsed.longitude)
            checked.append(CheckedMessage(message, Checked(parsed, event, fingerprint), 0.0, fetched))
        share = (time.perf_counter() - t0) / max(1, len(checked))
        for item in checked:
            item.validate_s = share
        return checked

    async def prepare(self, checked: Sequence[CheckedMessage]) -> PreparedBatch:
        """Stage 1: apply the checked messages to the feature state (Redis) and read their features."""
        return await self.complete(await self.start(checked))

    async def start(self, checked: Sequence[CheckedMessage]) -> PreparedBatch:
        """Stage 1a: claim the transaction ids, then send the transactions to the feature state. Batches must
        be started in order, and the next may start before this one completes. An id used before by other
        content (in this batch or any earlier one) is dead-lettered; a repeat of the same content gets the
        stored first result, or, while there is none, goes on and gets the first vector back from the
        feature state."""
        batch = PreparedBatch(messages=[c.message for c in checked], outcome=BatchOutcome(consumed=len(checked)),
                              started_at=time.time())
        valid: list[tuple[InboundMessage, Checked]] = []
        fetched: list[float] = []
        for checked_message in checked:
            batch.validate_s += checked_message.validate_s
            if isinstance(checked_message.result, Rejection):
                rejection = checked_message.result
                out = dead_letter_message(checked_message.message, rejection, self.hasher,
                                          self.config.dead_letter_topic)
                self._count_dead(out, rejection.reason, batch)
            else:
                valid.append((checked_message.message, checked_message.result))
                fetched.append(checked_message.fetched_at)
        claims = [Claim(c.transaction.transaction_id, c.content_hash, m.topic, m.partition, m.offset) for m, c in valid]
        claimed_ids = await self.path.claim(self.ids, claims)
        for (message, item), fetched_at, claimed in zip(valid, fetched, claimed_ids, strict=True):
            stamp = nan if message.timestamp is None else message.timestamp
            if claimed.status == "conflict":
                out = conflict_message(message, item.transaction, item.event.card_ref, item.content_hash, claimed,
                                       self.config.dead_letter_topic)
                self._count_dead(out, "duplicate:transaction_id:conflict", batch)
            elif claimed.outcome is not None:
                batch.repeats.append((item.transaction, item.event.card_ref, claimed.outcome))
                batch.repeat_arrived.append((stamp, fetched_at))
            else:
                batch.transactions.append(item.transaction)
                batch.events.append(item.event)
                batch.arrived.append((stamp, fetched_at))
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
        batch.features_at = time.time()
        return batch

    async def finish(self, batch: PreparedBatch) -> BatchOutcome:
        """Stage 2: score, build the records, publish, then store the new results for repeats. May overlap
        the next batch's ``prepare``."""
        outcome, valid, valid_messages = batch.outcome, batch.events, batch.transactions
        out = batch.out
        t2 = time.time()
        if valid and outcome.features is not None:
            results = await self.path.score(self.scorer, outcome.features, valid, valid_messages)
        t3 = time.time()
        stored: list[tuple[str, bytes]] = []
        if valid or batch.repeats:
            now = datetime.now(UTC)
            produced_at = [m.timestamp for m in batch.messages if m.timestamp is not None]
            end_to_end = (now.timestamp() - min(produced_at)) * 1000 if produced_at else 0.0
            latencies = Latencies(
                validate_ms=batch.validate_s * 1000, features_ms=batch.features_s * 1000,
                model_ms=(t3 - t2) * 1000, end_to_end_ms=end_to_end,
            )
            outcome.latencies = latencies
            common: dict[str, object] = {"latencies": asdict_latencies(latencies), "scored_at": _iso(now)}
            scored_topic, hash_ = self.config.scored_topic, self.config.feature_list_hash
            timings: list[dict[str, float] | None] = list(self._timings(batch, t2, t3))
            if not self.config.stage_timings:
                timings = [None] * len(timings)
            for tx, event, result, timing in zip(valid_messages, valid, results if valid else (),
                                                 timings[: len(valid)], strict=True):
                fields = result_fields(result, hash_)
                out.append(OutboundMessage(scored_topic, event.card_ref.encode(),
                                           scored_json(tx, event.card_ref, fields, common, timing)))
                stored.append((tx.transaction_id, encode_result(fields)))
                outcome.decisions[result.decision] = outcome.decisions.get(result.decision, 0) + 1
                outcome.models[(result.model_name, result.model_version, result.model_label)] += 1
                outcome.degraded += bool(result.degraded)
            for (tx, card_ref, first), timing in zip(batch.repeats, timings[len(valid_messages):], strict=True):
                fields = decode_result(first)
                out.append(OutboundMessage(scored_topic, card_ref.encode(),
                                           scored_json(tx, card_ref, fields, common, timing)))
                outcome.decisions[fields["decision"]] = outcome.decisions.get(fields["decision"], 0) + 1
            outcome.scored = len(valid) + len(batch.repeats)
        t4 = time.perf_counter()
        await self.path.publish(self.publisher, out)
        outcome.publish_s = time.perf_counter() - t4
        if outcome.stages is not None:
            outcome.stages.publish_s = outcome.publish_s
        if stored:
            # Only after the broker has them: a stored result is one that was published.
            await self.path.record_outcomes(self.ids, stored)
        return outcome

    def _timings(self, batch: PreparedBatch, scoring_at: float, scored_at: float) -> list[dict[str, float]]:
        """Each published record's ``timings`` (``schemas.scored.StageTimings``), scored records first, then
        repeats; the same seconds go to ``batch.outcome.stages`` for the worker's histograms. Vectorised
        over the batch: two subtractions per record, and one dict."""
        arrived = batch.arrived + batch.repeat_arrived
        if not arrived:
            return []
        stamps = np.array(arrived, dtype=np.float64)
        fetch_s = stamps[:, 1] - stamps[:, 0]
        wait_s = batch.started_at - stamps[:, 1]
        features_s = batch.features_at - batch.started_at
        score_wait_s = scoring_at - batch.features_at
        model_s = scored_at - scoring_at
        batch.outcome.stages = RecordStages(fetch_s[~np.isnan(fetch_s)], wait_s, features_s, score_wait_s, model_s,
                                            0.0, len(arrived))
        shared = {"features_ms": round(features_s * 1000, 3), "score_wait_ms": round(score_wait_s * 1000, 3),
                  "model_ms": round(model_s * 1000, 3)}
        fetch_ms = np.round(fetch_s * 1000, 3).tolist()  # NaN (no Kafka timestamp) is written as null
        wait_ms = np.round(wait_s * 1000, 3).tolist()
        return [{"fetch_ms": f, "batch_wait_ms": w, **shared} for f, w in zip(fetch_ms, wait_ms, strict=True)]

    def _count_dead(self, message: OutboundMessage, reason: str, batch: PreparedBatch) -> None:
        batch.out.append(message)
        batch.outcome.dead_lettered += 1
        batch.outcome.reasons[reason] = batch.outcome.reasons.get(reason, 0) + 1
