"""Bytes ⇄ records. Decoding never raises: a bad message becomes a ``Rejection`` (bad input is data)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from schemas.dead_letter import DeadLetter, Stage

RecordT = TypeVar("RecordT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Rejection:
    stage: Stage
    reason: str
    error: str


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors(include_url=False, include_input=False)[0]
    location = ".".join(str(part) for part in err["loc"]) or "record"
    reason = f"validation:{location}:{err['type']}"
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
        original_b64=base64.b64encode(raw or b"").decode("ascii"),
        transaction_id=transaction_id,
        topic=topic,
        partition=partition,
        offset=offset,
        failed_at=datetime.now(UTC),
    )


def encode(record: BaseModel) -> bytes:
    return record.model_dump_json().encode("utf-8")
