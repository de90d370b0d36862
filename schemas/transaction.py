"""A card transaction as it arrives on the ``transactions`` topic."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from schemas.common import CURRENCIES, Identifier, Record, UtcDatetime

MAX_AMOUNT = 1_000_000.0


class Transaction(Record):
    transaction_id: Identifier
    card_id: Identifier
    terminal_id: Identifier
    # strict: a JSON number only (a numeric string or a boolean is a producer bug, not an amount)
    amount: Annotated[float, Field(strict=True, gt=0.0, le=MAX_AMOUNT, allow_inf_nan=False)]
    currency: str = "EUR"
    event_time: UtcDatetime
    latitude: Annotated[float, Field(strict=True, ge=-90.0, le=90.0)] | None = None
    longitude: Annotated[float, Field(strict=True, ge=-180.0, le=180.0)] | None = None

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value not in CURRENCIES:
            msg = f"unknown currency code {value[:16]!r}"
            raise ValueError(msg)
        return value

    @field_validator("event_time")
    @classmethod
    def _not_far_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        context = info.context or {}
        now: datetime | None = context.get("now")
        skew = timedelta(seconds=float(context.get("max_clock_skew_s", 86_400.0)))
        if now is not None and value > now + skew:
            msg = f"event_time {value.isoformat()} is more than {skew} in the future"
            raise ValueError(msg)
        return value
