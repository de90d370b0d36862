"""The scored record's ``timings`` can be switched off (``FRAUD_SCORED_STAGE_TIMINGS=false``): the key is then
left out, not written as null, so a consumer validating against a schema exported before the field existed
(``extra="forbid"``, ``additionalProperties: false``) still accepts the records."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from config.settings import Settings
from schemas.transaction import Transaction
from streams.outputs import scored_json

TX = Transaction(transaction_id="t-1", card_id="c-1", terminal_id="term-1", amount=12.5,
                 event_time=datetime(2026, 12, 7, 12, 0, tzinfo=UTC))
TIMINGS = {"fetch_ms": 1.0, "batch_wait_ms": 0.5, "features_ms": 2.0, "score_wait_ms": 0.0, "model_ms": 3.0}


def test_timings_are_written_when_given_and_left_out_otherwise() -> None:
    with_timings = orjson.loads(scored_json(TX, "ref", {"score": 0.1}, {}, TIMINGS))
    without = orjson.loads(scored_json(TX, "ref", {"score": 0.1}, {}, None))
    assert with_timings["timings"] == TIMINGS
    assert "timings" not in without
    assert {k: v for k, v in with_timings.items() if k != "timings"} == without


def test_the_setting_is_on_by_default_and_read_from_the_environment(monkeypatch: object) -> None:
    assert Settings().scored_stage_timings is True
    assert Settings(scored_stage_timings=False).scored_stage_timings is False
