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
    scored_at: datetime
