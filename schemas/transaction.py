"""A card transaction as it arrives on the ``transactions`` topic.

Amounts follow a card network's authorisation semantics: zero and positive amounts are authorisations
(zero = account verification, tokenisation, or a card-testing probe: scored like any other). The schema has
no transaction type, so it carries no refunds or reversals: a negative amount is rejected
(``validation:amount:greater_than_equal``). A schema that adds a type (``refund``, ``reversal``) is where a
negative amount could become valid, for those types only (docs/features.md, "Amounts").
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from schemas.common import CURRENCIES, Identifier, Record, UtcDatetime

MAX_AMOUNT = 1_000_000.0


def _no_negative_zero(value: float) -> float:
    # -0.0 passes ``ge=0`` and would be published as "-0.0": it is the zero amount.
    return value + 0.0


class Transaction(Record):
    transaction_id: Identifier
    card_id: Identifier
    terminal_id: Identifier
    # strict: a JSON number only (a numeric string or a boolean is a producer bug, not an amount)
    amount: Annotated[
        float,
        Field(strict=True, ge=0.0, le=MAX_AMOUNT, allow_inf_nan=False,
              description="Authorised amount in the currency's major unit, 0 <= amount <= 1e6. Zero is a valid "
              "authorisation (account verification) and is scored; negative amounts (refunds, reversals) "
              "are not transactions of this schema and are rejected."),
        AfterValidator(_no_negative_zero),
    ]
    currency: str = "EUR"
    event_time: UtcDatetime
    latitude: Annotated[float, Field(strict=True, ge=-90.0, le=90.0)] | None = None
    longitude: Annotated[float, Field(strict=True, ge=-180.0, le=180.0)] | None = None

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value not in CURRENCIES:
            msg = f"unknown currency code {value[:8]!r}"
            raise ValueError(msg)
        return value

    @field_validator("event_time")
    @classmethod
    def _not_far_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        # Runs for every record the worker reads: the limit is worked out once per batch (see
        # ``transaction_context``), not per record.
        context = info.context or {}
        limit: datetime | None = context.get("not_after")
        if limit is not None and value > limit:
            msg = f"event_time {value.isoformat()} is more than {context['max_clock_skew']} in the future"
            raise ValueError(msg)
        return value


def transaction_context(now: datetime, max_clock_skew_s: float) -> dict[str, object]:
    """Validation context of ``Transaction``: event times more than ``max_clock_skew_s`` after ``now`` are
    rejected. Build it once per batch of records, with the batch's ``now``."""
    skew = timedelta(seconds=max_clock_skew_s)
    return {"not_after": now + skew, "max_clock_skew": skew}
