"""Card numbers found as DLP scanners find them (schemas/pan.py), unit level; the worker-level property test
is tests/fuzz/test_pan_property.py."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.pan import card_network, has_pan, luhn_valid, mask_pans, mask_pans_in_bytes, pan_field, pan_spans

# The networks' published test numbers, one per network range the detector knows.
TEST_PANS = {
    "visa": ["4111111111111111", "4012888888881881", "4222222222222"],
    "mastercard": ["5555555555554444", "5105105105105100", "2223000048400011"],
    "amex": ["378282246310005", "371449635398431"],
    "discover": ["6011111111111117", "6011000990139424", "6445644564456445"],
    "diners": ["30569309025904", "36227206271667", "38520000023237"],
    "jcb": ["3530111333300000", "3566002020360505"],
    "unionpay": ["6200000000000005", "6250941006528599"],
    "maestro": ["6759649826438453", "5018000000000009"],
}
ALL = [pan for pans in TEST_PANS.values() for pan in pans]


def make_pan(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always fits")


@pytest.mark.parametrize(("network", "pan"), [(n, p) for n, pans in TEST_PANS.items() for p in pans])
def test_every_networks_test_numbers_are_card_numbers(network: str, pan: str) -> None:
    assert luhn_valid(pan)
    assert card_network(pan) == network
    assert has_pan(pan) and has_pan(f"ref {pan}.") and has_pan(f"x{pan}y")


@pytest.mark.parametrize("text", ["4111 1111 1111 1111", "4111-1111-1111-1111", "3782 822463 10005",
                                  "4111 1111-1111 1111", "41 11111111 111111"])
def test_single_spaces_and_dashes_inside_are_looked_through(text: str) -> None:
    assert list(pan_spans(text)) == [(0, len(text))]
    assert mask_pans(text) == "".join("#" if c.isdigit() else c for c in text)


@pytest.mark.parametrize("text", [
    "4111111111111112",  # Luhn fails
    "1234567812345670",  # Luhn-valid, no network starts with 1 (UATP left out on purpose)
    "411111111111116",  # Visa prefix, Luhn-valid, but Visa issues no 15-digit numbers
    "94111111111111111",  # a PAN glued to a digit is a 17-digit number, not a PAN inside one
    "4111  1111 1111 1111",  # two spaces: groups this far apart are not one number
    "2018-04-01T00:00:31Z", "sim-3f9a1c2e-123456", "term-000456", "50.123456",
])
def test_what_is_not_a_card_number(text: str) -> None:
    assert not has_pan(text)
    assert mask_pans(text) == text


def test_unicode_digits_and_json_escapes_are_card_numbers_too() -> None:
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in "4111111111111111")
    assert has_pan(fullwidth)
    escaped = json.dumps({"terminal_id": fullwidth}).encode()
    assert escaped.count(b"\\uff1") == 16  # json.dumps wrote the full-width digits as escapes
    assert json.loads(mask_pans_in_bytes(escaped)) == {"terminal_id": "#" * 16}
    literal_escapes = b'{"x": "\\u0034\\u0031\\u0031\\u0031 1111 1111 1111"}'
    assert json.loads(mask_pans_in_bytes(literal_escapes)) == {"x": "#### #### #### ####"}


def test_bytes_without_a_card_number_are_kept_byte_for_byte() -> None:
    raw = b'{"transaction_id": "t\\u00e9", "amount": 12.5, "n": 1234567890123}'
    assert mask_pans_in_bytes(raw) is raw


def test_the_field_holding_it_is_named_and_unknown_names_stay_out() -> None:
    known = frozenset({"transaction_id", "card_id", "terminal_id"})
    allowed = frozenset({"card_id"})
    assert pan_field({"card_id": ALL[0], "terminal_id": "t"}, known, allowed) is None
    assert pan_field({"card_id": "c", "terminal_id": ALL[1]}, known, allowed) == "terminal_id"
    assert pan_field({"card_id": "c", "surprise": {"deep": [1, int(ALL[2])]}}, known, allowed) == "unknown_field"
    assert pan_field({ALL[3]: 1}, known, allowed) == "unknown_field"
    assert pan_field(ALL[4], known, allowed) == "record"


@settings(max_examples=400, deadline=None)
@given(
    network=st.sampled_from([("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("6011", 19),
                             ("36", 14), ("3530", 17), ("62", 18), ("6759", 13)]),
    seed=st.integers(0, 2**32),
    separator=st.sampled_from(["", " ", "-"]),
    before=st.text(alphabet=st.characters(blacklist_categories=("Nd",)), max_size=20),
    after=st.text(alphabet=st.characters(blacklist_categories=("Nd",)), max_size=20),
    unicode_digits=st.booleans(),
)
def test_a_generated_card_number_anywhere_in_text_is_found_and_masked(
    network: tuple[str, int], seed: int, separator: str, before: str, after: str, unicode_digits: bool
) -> None:
    pan = make_pan(network[0], network[1], random.Random(seed))
    rng = random.Random(seed)
    written = "".join(d + (separator if i < len(pan) - 1 and rng.random() < 0.3 else "") for i, d in enumerate(pan))
    if unicode_digits:
        written = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in written)
    text = before.rstrip(" -") + " " + written + " " + after.lstrip(" -")
    assert has_pan(text)
    masked = mask_pans(text)
    assert not has_pan(masked)
    assert "".join(c for c in masked if c.isdigit()).find(pan) < 0
    assert masked.replace("#", "") != text.replace("#", "")
