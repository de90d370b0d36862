"""``fraudstream dlq``'s logic without a broker: counting, exporting, checking a file of fixes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from fraudstream.topictools.dlq import check_resubmission, decoded, export_lines, reason_matches, summarise
from schemas.codec import Rejection, dead_letter


def line(offset: int, original: bytes, *, reason: str, stage: str = "validate", partition: int = 0
         ) -> dict[str, Any]:
    letter = dead_letter(Rejection(stage, reason, "why"), original, topic="transactions",
                         partition=3, offset=100 + offset)
    return {"topic": "transactions-dlq", "partition": partition, "offset": offset,
            "value": json.loads(letter.model_dump_json()), "value_format": "json"}


GOOD = {"transaction_id": "t1", "card_id": "4111111111111111", "terminal_id": "x", "amount": -5.0,
        "event_time": "2024-01-01T00:00:00Z"}


def test_summary_counts_by_reason_and_stage_with_first_and_last() -> None:
    lines = [line(0, json.dumps(GOOD).encode(), reason="validation:amount:greater_than"),
             line(1, b"{not json", reason="decode:json", stage="decode"),
             line(2, json.dumps(GOOD).encode(), reason="validation:amount:greater_than", partition=1),
             {"topic": "transactions-dlq", "partition": 0, "offset": 3, "value": "garbage", "value_format": "text"}]
    result = summarise("transactions-dlq", lines).as_dict()
    assert result["total"] == 4 and result["unreadable"] == 1
    assert [(s["stage"], s["count"]) for s in result["by_stage"]] == [("validate", 2), ("decode", 1)]
    amount = result["by_reason"][0]
    assert amount["reason"] == "validation:amount:greater_than" and amount["count"] == 2
    assert (amount["first"]["partition"], amount["first"]["offset"]) == (0, 0)
    assert (amount["last"]["partition"], amount["last"]["offset"]) == (1, 2)
    assert amount["first"]["failed_at"] <= amount["last"]["failed_at"]


def test_reason_prefixes() -> None:
    assert reason_matches("validation:amount:greater_than", "validation:*")
    assert not reason_matches("decode:json", "validation:*")
    assert not reason_matches("validation:amount:greater_than", "validation:amount")


def test_export_keeps_json_and_text_lines_and_lists_what_it_cannot() -> None:
    pretty = json.dumps(GOOD, indent=2).encode()
    result = export_lines([line(0, pretty, reason="r"), line(1, b"amount=5;card=x", reason="r"),
                           line(2, b"\xff\xfe binary", reason="r"), line(3, b"two\nlines", reason="r")])
    first = json.loads(result.lines[0])
    assert first["card_id"] == "[redacted]" and first["amount"] == -5.0 and b"\n" not in result.lines[0]
    assert result.lines[1] == b"amount=5;card=x"
    assert [(p, o) for p, o, _ in result.skipped] == [(0, 2), (0, 3)] and result.masked == 1


def test_show_decodes_the_original() -> None:
    shown = decoded(line(0, b"plain", reason="decode:json", stage="decode"))
    assert shown["original"] == "plain" and shown["original_format"] == "text" and "original_b64" not in shown
    assert shown["dlq"] == {"topic": "transactions-dlq", "partition": 0, "offset": 0}
    binary = decoded(line(1, b"\xff", reason="decode:utf8", stage="decode"))
    assert binary["original_format"] == "base64" and base64.b64decode(binary["original"]) == b"\xff"


def test_resubmission_is_checked_as_the_worker_checks() -> None:
    fixed = {**GOOD, "amount": 5.0}
    masked = {**fixed, "card_id": "[redacted]"}
    masked_elsewhere = {**fixed, "terminal_id": "################"}
    lines = [json.dumps(fixed).encode(), b"", json.dumps(masked).encode(), json.dumps(GOOD).encode(),
             json.dumps(masked_elsewhere).encode(), b"{broken"]
    checked = check_resubmission(lines, now=datetime.now(UTC), max_bytes=65536, max_clock_skew_s=86400)
    assert [c.number for c in checked] == [1, 3, 4, 5, 6]  # blank lines are skipped, numbers kept
    ok, masked_card, negative, masked_terminal, broken = checked
    assert ok.problem is None and ok.transaction is not None and ok.transaction.amount == 5.0
    assert masked_card.problem and "still masked" in masked_card.problem
    assert masked_terminal.problem and "still masked" in masked_terminal.problem
    assert negative.problem and negative.problem.startswith("validation:amount")
    assert broken.problem and broken.problem.startswith("decode:json")
