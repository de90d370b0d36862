"""The dead-letter topic for the people who fix what landed there (``fraudstream dlq``).

``summarise`` counts the dead letters by reason and by stage, with the first and last (offset, time) of
each reason; ``decoded`` gives one dead letter with its original record decoded; ``export_lines`` turns the
originals of one reason into JSON lines a person can edit; ``check_resubmission`` validates an edited file
with the worker's own decoder before anything is sent back to ``transactions``.

The originals are stored with card numbers masked (``schemas.codec.redact_card_numbers``): the ``card_id``
value reads ``"[redacted]"`` and any other card number is a run of ``#``. Such a record cannot be
resubmitted as it is (nobody can score a transaction without its card): the fix includes putting the card
back, and ``check_resubmission`` refuses a line that is still masked.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from schemas.codec import REDACTED, Rejection, decode
from schemas.transaction import Transaction, transaction_context

MASKED_RUN = re.compile(rb"#{13,19}")


def reason_matches(reason: str, wanted: str) -> bool:
    """``wanted`` is a reason, or a prefix ending in ``*`` (``validation:*``)."""
    if wanted.endswith("*"):
        return reason.startswith(wanted[:-1])
    return reason == wanted


@dataclass
class Position:
    partition: int
    offset: int
    failed_at: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"partition": self.partition, "offset": self.offset, "failed_at": self.failed_at}


@dataclass
class ReasonSummary:
    reason: str
    count: int = 0
    stages: Counter[str] = field(default_factory=Counter)
    first: Position | None = None
    last: Position | None = None

    def add(self, position: Position, stage: str) -> None:
        self.count += 1
        self.stages[stage] += 1
        if self.first is None or _at(position) < _at(self.first):
            self.first = position
        if self.last is None or _at(position) >= _at(self.last):
            self.last = position

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "count": self.count, "stages": dict(self.stages),
                "first": self.first.as_dict() if self.first else None,
                "last": self.last.as_dict() if self.last else None}


def _at(position: Position) -> tuple[str, int, int]:
    # ISO 8601 UTC times sort as text; the offset breaks ties (and orders letters without a time).
    return (position.failed_at or "", position.partition, position.offset)


@dataclass
class DlqSummary:
    topic: str
    total: int = 0
    unreadable: int = 0
    by_reason: dict[str, ReasonSummary] = field(default_factory=dict)
    by_stage: dict[str, ReasonSummary] = field(default_factory=dict)
    """Per stage, the same counts and first/last dead letter (``reason`` holds the stage name)."""

    def add(self, line: dict[str, Any]) -> None:
        """One line of ``tail`` (``record_as_json``) read from the dead-letter topic."""
        self.total += 1
        letter = line.get("value")
        if line.get("value_format") != "json" or not isinstance(letter, dict) or "reason" not in letter:
            self.unreadable += 1
            return
        reason, stage = str(letter["reason"]), str(letter.get("stage", "?"))
        failed_at = letter.get("failed_at")
        position = Position(int(line["partition"]), int(line["offset"]),
                            str(failed_at) if failed_at is not None else None)
        self.by_stage.setdefault(stage, ReasonSummary(stage)).add(position, stage)
        self.by_reason.setdefault(reason, ReasonSummary(reason)).add(position, stage)

    def as_dict(self) -> dict[str, Any]:
        reasons = sorted(self.by_reason.values(), key=lambda r: (-r.count, r.reason))
        return {"topic": self.topic, "total": self.total, "unreadable": self.unreadable,
                "by_stage": [{"stage": s.reason, "count": s.count,
                              "first": s.first.as_dict() if s.first else None,
                              "last": s.last.as_dict() if s.last else None}
                             for s in sorted(self.by_stage.values(), key=lambda s: (-s.count, s.reason))],
                "by_reason": [r.as_dict() for r in reasons]}


def summarise(topic: str, records: Iterable[dict[str, Any]]) -> DlqSummary:
    summary = DlqSummary(topic)
    for line in records:
        summary.add(line)
    return summary


def original_bytes(letter: dict[str, Any]) -> bytes:
    return base64.b64decode(str(letter.get("original_b64", "")), validate=False)


def decoded(line: dict[str, Any]) -> dict[str, Any]:
    """A dead letter as ``show`` prints it: its fields and where it sits, the original decoded in place of
    ``original_b64`` (JSON when it is JSON, else text, else base64)."""
    letter = dict(line["value"])
    raw = original_bytes(letter)
    letter.pop("original_b64", None)
    try:
        letter["original"], letter["original_format"] = orjson.loads(raw), "json"
    except orjson.JSONDecodeError:
        try:
            letter["original"], letter["original_format"] = raw.decode("utf-8"), "text"
        except UnicodeDecodeError:
            letter["original"], letter["original_format"] = base64.b64encode(raw).decode(), "base64"
    letter["dlq"] = {"topic": line["topic"], "partition": line["partition"], "offset": line["offset"]}
    return letter


def of_reason(records: Iterable[dict[str, Any]], wanted: str) -> Iterator[dict[str, Any]]:
    for line in records:
        letter = line.get("value")
        if isinstance(letter, dict) and reason_matches(str(letter.get("reason", "")), wanted):
            yield line


@dataclass
class ExportResult:
    lines: list[bytes] = field(default_factory=list)
    skipped: list[tuple[int, int, str]] = field(default_factory=list)
    """(partition, offset, why) of originals that are not one line of text (binary or multi-line)."""
    masked: int = 0


def export_lines(records: Iterable[dict[str, Any]]) -> ExportResult:
    """The originals as one line each: a JSON original compacted to one line, other single-line text as it
    is (a person can repair it), binary or multi-line text skipped (``fraudstream dlq show`` has them)."""
    result = ExportResult()
    for line in records:
        raw = original_bytes(line["value"])
        try:
            text_line = orjson.dumps(orjson.loads(raw))
        except orjson.JSONDecodeError:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                result.skipped.append((line["partition"], line["offset"], "not UTF-8 text"))
                continue
            if "\n" in text.strip("\n") or "\r" in text:
                result.skipped.append((line["partition"], line["offset"], "text over several lines"))
                continue
            text_line = text.strip("\n").encode()
        result.masked += _is_masked(text_line)
        result.lines.append(text_line)
    return result


def _is_masked(raw: bytes) -> bool:
    return REDACTED in raw or MASKED_RUN.search(raw) is not None


@dataclass(frozen=True)
class CheckedLine:
    number: int
    raw: bytes
    transaction: Transaction | None
    problem: str | None


def check_resubmission(lines: Iterable[bytes], *, now: datetime, max_bytes: int, max_clock_skew_s: float
                       ) -> list[CheckedLine]:
    """Validate each non-blank line as the worker would (``schemas.codec.decode``); a line whose card
    number is still masked is refused with the fix."""
    context = transaction_context(now, max_clock_skew_s)
    checked: list[CheckedLine] = []
    for number, raw in enumerate(lines, start=1):
        raw = raw.strip()
        if not raw:
            continue
        if _is_masked(raw):
            checked.append(CheckedLine(number, raw, None, "a card number is still masked ('[redacted]' or "
                                       "'####…'): put the real card number back"))
            continue
        result = decode(Transaction, raw, max_bytes=max_bytes, context=context)
        if isinstance(result, Rejection):
            checked.append(CheckedLine(number, raw, None, f"{result.reason}: {result.error}"))
        else:
            checked.append(CheckedLine(number, raw, result, None))
    return checked
