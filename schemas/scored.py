"""The result the risk teams consume on ``scored-transactions``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import Record

Decision = Literal["approve", "review", "decline"]


class ReasonCode(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    feature: str
    contribution: float


class Latencies(BaseModel):
    """Milliseconds spent per stage for this record's micro-batch; ``end_to_end`` from the event's
    Kafka timestamp to publication."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    validate_ms: float = 0.0
    features_ms: float = 0.0
    model_ms: float = 0.0
    end_to_end_ms: float = 0.0


class StageTimings(BaseModel):
    """Milliseconds this record spent in each stage of the worker, in order; their sum is the time from the
    transaction's Kafka timestamp to the start of the publish (the publish itself, until the broker's
    acknowledgement, is in the worker's ``fraudstream_record_stage_latency_seconds{stage="publish"}``).
    Every field is optional: a stage that did not apply (a repeat's stored result has no model call) or
    could not be measured (a record without a Kafka timestamp) is left out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fetch_ms: float | None = None
    """Kafka timestamp → the worker's fetch returned it (the broker's and the consumer's waits)."""
    batch_wait_ms: float | None = None
    """Fetched → its micro-batch started (validation, the chunk queue, waiting for a free pipeline slot)."""
    features_ms: float | None = None
    """Its batch's id claims and feature state in Redis, including the wait for the batch before."""
    score_wait_ms: float | None = None
    """Features read → the model call started (batches are scored and published in order)."""
    model_ms: float | None = None
    """Its batch's model call and decision."""


class ShadowScore(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model_version: int | None
    score: float


class ScoredTransaction(Record):
    transaction_id: str
    card_ref: str
    """Keyed hash of the card id: card numbers are never published in clear."""
    terminal_id: str
    amount: float
    currency: str
    event_time: datetime
    score: Annotated[float, Field(ge=0.0, le=1.0)]
    decision: Decision
    reason_codes: Annotated[list[ReasonCode], Field(default_factory=list, max_length=3)]
    rules_fired: list[str] = Field(default_factory=list)
    model_name: str
    model_version: int | None
    model_label: str | None = None
    degraded: bool = False
    shadow: ShadowScore | None = None
    feature_list_hash: str
    latencies: Latencies = Field(default_factory=Latencies)
    timings: StageTimings | None = None
    """Per-record stage times (since issue #20; absent in records of older workers)."""
    scored_at: datetime


PER_DELIVERY_FIELDS: frozenset[str] = frozenset({"latencies", "timings", "scored_at"})
"""The fields that describe one delivery, not the result: a repeated transaction id is published with its
first result, equal field for field except these."""
