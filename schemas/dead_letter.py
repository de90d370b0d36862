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
    """The original message bytes, base64: kept byte for byte, whatever they were."""
    transaction_id: str | None = None
    topic: str
    partition: int
    offset: int
    failed_at: datetime
