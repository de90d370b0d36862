"""Dead letters never carry a clear card number and never outgrow what the producer and broker accept."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from schemas import Transaction
from schemas.codec import DEAD_LETTER_ORIGINAL_MAX, Rejection, dead_letter, decode, encode, redact_card_numbers

PAN = "4111111111111111"  # Luhn-valid test Visa number


def _dead(raw: bytes) -> bytes:
    rejection = decode(Transaction, raw, max_bytes=64 * 1024)
    assert isinstance(rejection, Rejection)
    record = dead_letter(rejection, raw, topic="transactions", partition=0, offset=1)
    return base64.b64decode(record.original_b64)


def test_card_id_field_is_masked_and_the_rest_kept() -> None:
    raw = json.dumps({"transaction_id": "t1", "card_id": "card-77", "amount": -1}).encode()
    kept = _dead(raw)
    assert b"card-77" not in kept
    assert json.loads(kept) == {"transaction_id": "t1", "card_id": "[redacted]", "amount": -1}


def test_pan_anywhere_is_masked_even_in_garbage() -> None:
    for raw in (f"not json {PAN} trailing".encode(), b'\xff{"pan": ' + PAN.encode() + b"}",
                json.dumps({"card_id": int(PAN), "amount": 0}).encode(),
                json.dumps({"note": f"card {PAN}", "card_id": "x"}).encode()):
        assert PAN.encode() not in _dead(raw), raw


def test_a_truncated_card_id_is_masked() -> None:
    raw = b'{"transaction_id": "t", "card_id": "' + b"9" * (DEAD_LETTER_ORIGINAL_MAX + 10) + b'"}'
    kept = _dead(raw)
    assert len(kept) <= DEAD_LETTER_ORIGINAL_MAX
    assert b"999" not in kept


def test_non_pan_digit_runs_are_kept() -> None:
    assert redact_card_numbers(b"id 1234567890123 x") == b"id 1234567890123 x"  # 13 digits, not Luhn-valid


def test_oversized_original_is_capped_so_the_dead_letter_fits_the_broker() -> None:
    raw = b'"' + b"y" * 1_900_000 + b'"'
    rejection = decode(Transaction, raw, max_bytes=64 * 1024)
    assert isinstance(rejection, Rejection) and rejection.reason == "decode:oversized"
    record = dead_letter(rejection, raw, topic="transactions", partition=0, offset=1)
    assert len(encode(record)) < 100 * 1024


def test_unknown_field_names_stay_out_of_the_reason() -> None:
    raw = json.dumps({"transaction_id": "t", "card_id": "c", "terminal_id": "x", "amount": 1,
                      "event_time": "2026-01-01T00:00:00Z", "evil-label-{}": 1}).encode()
    rejection = decode(Transaction, raw, max_bytes=64 * 1024)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "validation:record:extra_forbidden"
    assert "evil-label" in rejection.error


@given(st.binary(max_size=300), st.sampled_from([PAN, "5555555555554444", "378282246310005"]))
def test_no_pan_survives_in_random_bytes(prefix: bytes, pan: str) -> None:
    raw = prefix + b" " + pan.encode() + b" " + prefix
    assert pan.encode() not in redact_card_numbers(raw)
