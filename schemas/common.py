"""Shared field types and rules for every fraudstream record.

Amounts are float64 in the currency's major unit, finite and non-negative (zero is a verification, see
``schemas/transaction.py``); money is never summed into a published figure, so binary floats are adequate
(documented rule; the feature engines aggregate integer cents). Times are timezone-aware and
normalised to UTC; a naive timestamp is rejected, not guessed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = 1
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)

# ISO 4217 codes the bank settles in; anything else is a bad record, not a new currency.
CURRENCIES = frozenset({
    "EUR", "USD", "GBP", "CHF", "JPY", "CAD", "AUD", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "RON", "BGN",
    "TRY", "CNY", "HKD", "SGD", "INR", "BRL", "MXN", "ZAR",
})

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        msg = "timestamp has no time zone; send ISO 8601 with an offset, e.g. 2018-04-01T00:00:31Z"
        raise ValueError(msg)
    value = value.astimezone(UTC)
    if value < EARLIEST_EVENT_TIME:
        msg = f"timestamp {value.isoformat()} is before {EARLIEST_EVENT_TIME.date()}"
        raise ValueError(msg)
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class Record(BaseModel):
    """Base of all topic records: strict, immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False, allow_inf_nan=False)

    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
