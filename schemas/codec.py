"""Bytes ⇄ records. Decoding never raises: a bad message becomes a ``Rejection`` (bad input is data)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar, get_args

import orjson
from pydantic import BaseModel, ValidationError

from schemas.dead_letter import DeadLetter, FirstOccurrence, Stage
from schemas.pan import has_pan, mask_pans, mask_pans_in_bytes, may_hold_pan, pan_field

RecordT = TypeVar("RecordT", bound=BaseModel)

DEAD_LETTER_ORIGINAL_MAX = 64 * 1024
"""At most this many original bytes go into a dead letter: an oversized record (up to the broker's 2 MB)
would otherwise make a dead letter larger than the producer or broker accept, and the stream would stall
retrying it."""
CARD_FIELDS = frozenset({"card_id"})
"""The only fields that may carry a card number: it is replaced by its keyed hash before anything is stored
or published. A card number anywhere else is a rejection (``validation:pan_in_field:<field>``)."""
# A card number must never sit in clear on a topic, and base64 is no protection: the ``card_id`` value of a
# JSON record is masked whatever it holds, and card numbers anywhere else in whatever shape (schemas/pan.py).
_CARD_FIELD = re.compile(rb'("card_id"\s*:\s*)("(?:[^"\\]|\\.)*(?:"|\\?\Z)|-?[0-9][0-9.eE+-]*)')
REDACTED = b'"[redacted]"'
# A cut through a digit run at the 64 KiB limit could leave the first digits of a card number behind.
_TRAILING_DIGITS = re.compile(rb"[0-9][0-9 \-]*\Z")
_READABLE = {
    name: re.compile(rb'"' + name.encode() + rb'"\s*:\s*(?:"((?:[^"\\]|\\.){1,128})"|(-?[0-9]{1,40})(?![0-9.eE]))')
    for name in ("transaction_id", "card_id")
}
READABLE_MAX = 128


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


def _pan_rejection(field: str) -> Rejection:
    where = "a field this record type does not have" if field == "unknown_field" else f"field {field!r}"
    return Rejection("validate", f"validation:pan_in_field:{field}",
                     f"a card number in {where}: only card_id may carry one (masked in this dead letter)")


def _pan_in_json(model: type[BaseModel], raw: bytes, allowed: frozenset[str]) -> Rejection | None:
    """A PAN anywhere in a record that failed validation (known or unknown field, key, nested value)."""
    if not may_hold_pan(raw):
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    field = pan_field(value, frozenset(model.model_fields), allowed)
    return None if field is None else _pan_rejection(field)


_STRING_FIELDS: dict[tuple[type[BaseModel], frozenset[str]], tuple[str, ...]] = {}
_NOT_DIGITS = bytes(b for b in range(256) if not 0x30 <= b <= 0x39)


def _string_fields(model: type[BaseModel], allowed: frozenset[str]) -> tuple[str, ...]:
    key = (model, allowed)
    if key not in _STRING_FIELDS:
        _STRING_FIELDS[key] = tuple(
            name for name, info in model.model_fields.items()
            if name not in allowed and (info.annotation is str or str in get_args(info.annotation))
        )
    return _STRING_FIELDS[key]


def _pan_in_record(record: BaseModel, allowed: frozenset[str]) -> Rejection | None:
    """A PAN in a string field of a record that validated. Its other fields cannot hold one (numbers in
    range, a parsed time, no unknown fields), so this is the whole check on the worker's hot path: an ASCII
    value with fewer than 13 digits (one C call to count them) is passed at once."""
    for name in _string_fields(type(record), allowed):
        value = getattr(record, name)
        if not isinstance(value, str) or len(value) < 13:
            continue
        if value.isascii() and len(value.encode().translate(None, _NOT_DIGITS)) < 13:
            continue
        if has_pan(value):
            return _pan_rejection(name)
    return None


def decode(
    model: type[RecordT], raw: bytes | None, *, max_bytes: int, context: dict[str, object] | None = None,
    pan_allowed: frozenset[str] = CARD_FIELDS,
) -> RecordT | Rejection:
    """Parse and validate one message; oversized, non-UTF-8, non-JSON and invalid records are rejected
    with a specific reason, and so is a card number in any field but ``pan_allowed`` (whatever else is
    wrong with the record: the sender learns about the card number first)."""
    if raw is None:
        return Rejection("decode", "decode:empty", "message has no value")
    if len(raw) > max_bytes:
        return Rejection("decode", "decode:oversized", f"message is {len(raw)} bytes, the limit is {max_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("decode", "decode:utf8", f"message is not UTF-8: {exc.reason} at byte {exc.start}")
    try:
        record = model.model_validate_json(raw, context=context)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return Rejection("decode", "decode:json", str(exc.errors()[0]["msg"])[:1000])
        pan = _pan_in_json(model, raw, pan_allowed)
        if pan is not None:
            return pan
        reason, error = _first_error(exc)
        return Rejection("validate", reason, error)
    except (ValueError, RecursionError) as exc:  # e.g. absurdly deep nesting
        return Rejection("decode", "decode:json", str(exc)[:1000])
    return _pan_in_record(record, pan_allowed) or record


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value if len(value) <= READABLE_MAX else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if abs(value) < 10**READABLE_MAX else None
    return None


def readable_ids(raw: bytes | None) -> tuple[str | None, str | None]:
    """(transaction_id, card_id) of a message as far as they can be read, whether or not it is valid:
    a string (or integer) value of up to 128 characters; from broken JSON by pattern. The card id is for
    hashing into a ``card_ref`` only, never for storing."""
    if not raw:
        return None, None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        found: list[str | None] = []
        for name in ("transaction_id", "card_id"):
            match = _READABLE[name].search(raw[:DEAD_LETTER_ORIGINAL_MAX])
            text = None if match is None else (match.group(1) or match.group(2)).decode("utf-8", "replace")
            found.append(text)
        return found[0], found[1]
    if not isinstance(value, dict):
        return None, None
    return _text(value.get("transaction_id")), _text(value.get("card_id"))


def dead_letter(
    rejection: Rejection, raw: bytes | None, *, topic: str, partition: int, offset: int,
    transaction_id: str | None = None, card_ref: str | None = None, content_hash: str | None = None,
    conflicts_with: FirstOccurrence | None = None,
) -> DeadLetter:
    return DeadLetter(
        stage=rejection.stage,
        reason=rejection.reason,
        error=mask_pans(rejection.error),
        original_b64=base64.b64encode(_original(raw or b"")).decode("ascii"),
        transaction_id=None if transaction_id is None else mask_pans(transaction_id),
        card_ref=card_ref,
        content_hash=content_hash,
        conflicts_with=conflicts_with,
        topic=topic,
        partition=partition,
        offset=offset,
        failed_at=datetime.now(UTC),
    )


def _original(raw: bytes) -> bytes:
    kept = raw[:DEAD_LETTER_ORIGINAL_MAX]
    if len(raw) > DEAD_LETTER_ORIGINAL_MAX and raw[DEAD_LETTER_ORIGINAL_MAX : DEAD_LETTER_ORIGINAL_MAX + 1] in (
        b"0123456789 -"
    ):
        kept = _TRAILING_DIGITS.sub(lambda m: re.sub(rb"[0-9]", b"#", m.group()), kept)
    return redact_card_numbers(kept)


def encode(record: BaseModel) -> bytes:
    return record.model_dump_json().encode("utf-8")


def redact_card_numbers(raw: bytes) -> bytes:
    """``raw`` with the ``card_id`` value and every card number masked (schemas/pan.py); other bytes kept."""
    return mask_pans_in_bytes(_CARD_FIELD.sub(lambda m: m.group(1) + REDACTED, raw))
