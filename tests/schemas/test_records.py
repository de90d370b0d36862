"""Strict validation of topic records: every kind of bad input is rejected with a specific reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from schemas import FraudLabel, Transaction, transaction_context
from schemas.codec import Rejection, decode
from schemas.export import TOPIC_RECORDS, export_json_schemas

NOW = datetime(2026, 1, 1, tzinfo=UTC)
GOOD = {
    "transaction_id": "tx-1", "card_id": "card-1", "terminal_id": "term-1", "amount": 12.5,
    "currency": "EUR", "event_time": "2025-12-31T23:00:00Z",
}


def parse(payload: object, raw: bytes | None = None) -> Transaction | Rejection:
    data = raw if raw is not None else json.dumps(payload).encode()
    return decode(Transaction, data, max_bytes=64 * 1024, context=transaction_context(NOW, 86_400))


def test_a_good_transaction_parses_to_utc() -> None:
    tx = parse(GOOD)
    assert isinstance(tx, Transaction)
    assert tx.event_time == datetime(2025, 12, 31, 23, tzinfo=UTC)
    assert tx.schema_version == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount": -1}, "validation:amount:greater_than_equal"),  # no refunds/reversals in this schema
        ({"amount": -0.01}, "validation:amount:greater_than_equal"),
        ({"amount": 1e300}, "validation:amount:less_than_equal"),
        ({"amount": float("nan")}, "validation:amount:finite_number"),
        ({"amount": float("inf")}, "validation:amount:finite_number"),
        ({"amount": "12"}, "validation:amount:float_type"),
        ({"amount": True}, "validation:amount:float_type"),
        ({"amount": 12}, None),  # a JSON integer is a valid amount
        ({"currency": "XXX"}, "validation:currency:value_error"),
        ({"event_time": "2100-01-01T00:00:00Z"}, "validation:event_time:value_error"),
        ({"event_time": "1970-01-01T00:00:00Z"}, "validation:event_time:value_error"),
        ({"event_time": "2025-12-31T23:00:00"}, "validation:event_time:value_error"),
        ({"unexpected": 1}, "validation:record:extra_forbidden"),  # the name stays out of the label
        ({"transaction_id": "x" * 65}, "validation:transaction_id:string_too_long"),
        ({"transaction_id": "bad id with spaces"}, "validation:transaction_id:string_pattern_mismatch"),
        ({"card_id": 123}, "validation:card_id:string_type"),
        ({"latitude": 95.0}, "validation:latitude:less_than_equal"),
    ],
)
def test_bad_fields_are_rejected_with_a_specific_reason(change: dict[str, object], reason: str | None) -> None:
    result = parse({**GOOD, **change})
    if reason is None:
        assert isinstance(result, Transaction) and result.amount == 12.0
        return
    assert isinstance(result, Rejection), result
    assert result.reason == reason


def test_missing_field() -> None:
    payload = dict(GOOD)
    del payload["terminal_id"]
    result = parse(payload)
    assert isinstance(result, Rejection) and result.reason == "validation:terminal_id:missing"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe\x00garbage", "decode:utf8"),
        (b"{not json", "decode:json"),
        (b"[" * 100_000, "decode:oversized"),
        (b"", "decode:json"),
    ],
)
def test_undecodable_messages(raw: bytes, reason: str) -> None:
    result = parse(None, raw)
    assert isinstance(result, Rejection) and result.reason == reason and result.stage == "decode"


def test_none_value_is_rejected() -> None:
    result = decode(Transaction, None, max_bytes=100)
    assert isinstance(result, Rejection) and result.reason == "decode:empty"


def test_label_must_be_known_after_the_transaction() -> None:
    raw = json.dumps({
        "transaction_id": "t", "card_id": "c", "terminal_id": "x", "event_time": "2024-01-02T00:00:00Z",
        "available_at": "2024-01-01T00:00:00Z", "is_fraud": True,
    }).encode()
    result = decode(FraudLabel, raw, max_bytes=10_000)
    assert isinstance(result, Rejection) and "available_at" in result.error


def test_json_schemas_are_exported_and_validate_a_record(tmp_path: Path) -> None:
    paths = export_json_schemas(tmp_path)
    assert {p.name for p in paths} == {f"{name}.schema.json" for name in TOPIC_RECORDS} | {"index.json"}
    schema = json.loads((tmp_path / "transaction.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].startswith("urn:fraudstream:schema:transaction:")
    jsonschema.validate(GOOD, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**GOOD, "amount": -1}, schema)


@pytest.mark.parametrize("amount", [0, 0.0, -0.0, 0.004])
def test_a_zero_amount_is_a_valid_authorisation(amount: float) -> None:
    """Account verification, tokenisation, a card-testing probe: scored like any other transaction."""
    tx = parse({**GOOD, "amount": amount})
    assert isinstance(tx, Transaction)
    assert tx.amount == amount and str(tx.amount) == str(float(amount) + 0.0)  # -0.0 is published as 0.0


def test_the_json_schema_states_the_amount_rule(tmp_path: Path) -> None:
    export_json_schemas(tmp_path)
    schema = json.loads((tmp_path / "transaction.schema.json").read_text())
    amount = schema["properties"]["amount"]
    assert amount["minimum"] == 0 and "exclusiveMinimum" not in amount
    assert "verification" in amount["description"] and "refund" in amount["description"]
    jsonschema.validate({**GOOD, "amount": 0}, schema)
