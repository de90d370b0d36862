"""A record that could not be scored, with why, on ``transactions-dlq``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.common import Record

Stage = Literal["decode", "validate", "features", "score", "publish"]


class FirstOccurrence(BaseModel):
    """The record that first used a transaction id, for a conflict: where it was read and what it held."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    content_hash: str
    """Its content fingerprint (``content_hash`` of a dead letter is this record's)."""
    topic: str
    partition: int
    offset: int


class DeadLetter(Record):
    stage: Stage
    reason: str
    """Short machine-readable cause, e.g. ``validation:amount:greater_than_equal``,
    ``validation:pan_in_field:terminal_id``, ``duplicate:transaction_id:conflict``."""
    error: str
    """Human-readable explanation (card numbers masked)."""
    original_b64: str
    """The original message bytes, base64: byte for byte, except that card numbers are masked (the
    ``card_id`` value always, any card number anywhere) and at most the first 64 KiB are kept
    (``schemas.codec.dead_letter``)."""
    transaction_id: str | None = None
    """The record's transaction id whenever it had a readable one, valid or not (card numbers masked)."""
    card_ref: str | None = None
    """The keyed hash of the record's ``card_id`` whenever it had a readable one (never the card number):
    the same ``card_ref`` a scored record of that card carries."""
    content_hash: str | None = None
    """Fingerprint of the validated content (card_ref, terminal, amount, currency, event time, coordinates),
    for records that validated; equal fingerprints = the same transaction."""
    conflicts_with: FirstOccurrence | None = None
    """For ``duplicate:transaction_id:conflict``: the first record with this id, which was scored."""
    topic: str
    partition: int
    offset: int
    failed_at: datetime
