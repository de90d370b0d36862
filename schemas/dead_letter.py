"""A record that could not be scored, with why, on ``transactions-dlq``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from schemas.common import Record

Stage = Literal["decode", "validate", "features", "score", "publish"]


class DeadLetter(Record):
    stage: Stage
    reason: str
    """Short machine-readable cause, e.g. ``validation:amount:greater_than``."""
    error: str
    """Human-readable explanation."""
    original_b64: str
    """The original message bytes, base64: byte for byte, except that card numbers are masked and at most
    the first 64 KiB are kept (``schemas.codec.dead_letter``)."""
    transaction_id: str | None = None
    topic: str
    partition: int
    offset: int
    failed_at: datetime
