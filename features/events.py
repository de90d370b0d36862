"""What the feature engines consume: plain, typed, already-validated events (epoch seconds, UTC)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TransactionEvent:
    transaction_id: str
    card_ref: str
    """Keyed hash of the card id (never the clear card number)."""
    terminal_id: str
    event_time: float
    """Seconds since the Unix epoch, UTC."""
    amount: float
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True, slots=True)
class LabelEvent:
    transaction_id: str
    card_ref: str
    terminal_id: str
    event_time: float
    """When the labelled transaction happened (epoch seconds)."""
    available_at: float
    """When the label became known (epoch seconds): features use it only from then on."""
    is_fraud: bool
