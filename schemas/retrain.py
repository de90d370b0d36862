"""Retraining requests (analysts, drift monitor) and the trainer's status reports."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import Field

from schemas.common import Identifier, Record


class RetrainRequest(Record):
    request_id: Identifier
    requested_by: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="", max_length=1000)
    input_path: str | None = Field(default=None, max_length=4096)
    train_start: date | None = None
    train_days: int = Field(default=7, ge=1, le=365)
    promote: bool = True


class RetrainStatus(Record):
    request_id: str
    state: Literal["queued", "running", "succeeded", "failed"]
    message: str = ""
    model_version: int | None = None
    promoted_to: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    at: datetime
