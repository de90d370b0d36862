"""A fraud label (chargeback, analyst verdict) on the ``fraud-labels`` topic."""

from __future__ import annotations

from pydantic import model_validator

from schemas.common import Identifier, Record, UtcDatetime


class FraudLabel(Record):
    transaction_id: Identifier
    card_id: Identifier
    terminal_id: Identifier
    event_time: UtcDatetime
    """When the labelled transaction happened."""
    available_at: UtcDatetime
    """When the label became known: no feature may use it before this instant."""
    is_fraud: bool
    source: str = "chargeback"

    @model_validator(mode="after")
    def _known_after_the_fact(self) -> FraudLabel:
        if self.available_at < self.event_time:
            msg = "available_at is before the transaction's event_time"
            raise ValueError(msg)
        return self
