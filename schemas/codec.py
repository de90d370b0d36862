"""Bytes ⇄ records. Decoding never raises: a bad message becomes a ``Rejection`` (bad input is data)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from schemas.dead_letter import DeadLetter, Stage

RecordT = TypeVar("RecordT", bound=BaseModel)

DEAD_LETTER_ORIGINAL_MAX = 64 * 1024
"""At most this many original bytes go into a dead letter: an oversized record (up to the broker's 2 MB)
would otherwise make a dead letter larger than the producer or broker accept, and the stream would stall
retrying it."""
# A card number must never sit in clear on a topic, and base64 is no protection: the ``card_id`` value
# of a JSON record and any Luhn-valid 13-19 digit run (a PAN in whatever shape the record came) are masked.
_CARD_FIELD = re.compile(rb'("card_id"\s*:\s*)("(?:[^"\\]|\\.)*(?:"|\\?\Z)|-?[0-9][0-9.eE+-]*)')
_DIGIT_RUN = re.compile(rb"(?<![0-9])[0-9]{13,19}(?![0-9])")
REDACTED = b'"[redacted]"'


@dataclass(frozen=True, slots=True)
class Rejection:
    stage: Stage
    reason: str
    error: str


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors(include_url=False, include_input=False)[0]
    location = ".".join(str(part) for part in err["loc"]) or "record"
    # An unknown field's name is the sender's text: keep it out of the reason (a metric label) and in the
    # error only, so a hostile producer cannot mint unbounded reason values.
    where = "record" if err["type"] == "extra_forbidden" else location
    reason = f"validation:{where}:{err['type']}"
    return reason[:200], f"{location}: {err['msg']}"[:1000]


def decode(
    model: type[RecordT], raw: bytes | None, *, max_bytes: int, context: dict[str, object] | None = None
) -> RecordT | Rejection:
    """Parse and validate one message; oversized, non-UTF-8, non-JSON and invalid records are rejected
    with a specific reason."""
    if raw is None:
        return Rejection("decode", "decode:empty", "message has no value")
    if len(raw) > max_bytes:
        return Rejection("decode", "decode:oversized", f"message is {len(raw)} bytes, the limit is {max_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("decode", "decode:utf8", f"message is not UTF-8: {exc.reason} at byte {exc.start}")
    try:
        return model.model_validate_json(raw, context=context)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return Rejection("decode", "decode:json", str(exc.errors()[0]["msg"])[:1000])
        reason, error = _first_error(exc)
        return Rejection("validate", reason, error)
    except (ValueError, RecursionError) as exc:  # e.g. absurdly deep nesting
        return Rejection("decode", "decode:json", str(exc)[:1000])


def dead_letter(
    rejection: Rejection, raw: bytes | None, *, topic: str, partition: int, offset: int,
    transaction_id: str | None = None,
) -> DeadLetter:
    return DeadLetter(
        stage=rejection.stage,
        reason=rejection.reason,
        error=rejection.error,
        original_b64=base64.b64encode(redact_card_numbers((raw or b"")[:DEAD_LETTER_ORIGINAL_MAX])).decode("ascii"),
        transaction_id=transaction_id,
        topic=topic,
        partition=partition,
        offset=offset,
        failed_at=datetime.now(UTC),
    )


def encode(record: BaseModel) -> bytes:
    return record.model_dump_json().encode("utf-8")


def _luhn(digits: bytes) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ch - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def redact_card_numbers(raw: bytes) -> bytes:
    """``raw`` with the ``card_id`` value and every Luhn-valid 13-19 digit run masked; other bytes kept."""
    masked = _CARD_FIELD.sub(lambda m: m.group(1) + REDACTED, raw)
    return _DIGIT_RUN.sub(lambda m: b"#" * len(m.group()) if _luhn(m.group()) else m.group(), masked)
