"""Card numbers (PANs) found the way DLP scanners find them, and masked.

A PAN here is a run of 13-19 decimal digits, possibly split by single spaces or dashes, that passes the
Luhn check AND starts with the IIN (issuer identification number) of a card network in a length that
network issues. Digits are any Unicode decimal digits (``４１１１…`` is a PAN too), and JSON ``\\uXXXX``
escapes are looked through. A digit run glued to more digits is one longer number, not a PAN inside it
(``(?<!\\d)…(?!\\d)``, as the scanners bound it).

Why the network table: one in ten random digit strings passes Luhn alone, so Luhn alone would flag a tenth of
all 13-19 digit identifiers (merchant numbers, references). The table cuts that to the ranges networks
actually issue; the false-positive figures measured on realistic identifiers are in docs/reliability.md.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

# (prefix low, prefix high, lengths, network): the IIN ranges of ISO/IEC 7812 as the networks publish them
# (summarised e.g. in Wikipedia's "Payment card number"). Left out on purpose: UATP ("1", 15 digits: a tenth
# of all 15-digit numbers) and networks without a fixed prefix block.
_NETWORKS: tuple[tuple[str, str, frozenset[int], str], ...] = (
    ("4", "4", frozenset({13, 16, 19}), "visa"),
    ("51", "55", frozenset({16}), "mastercard"),
    ("2221", "2720", frozenset({16}), "mastercard"),
    ("34", "34", frozenset({15}), "amex"),
    ("37", "37", frozenset({15}), "amex"),
    ("6011", "6011", frozenset(range(16, 20)), "discover"),
    ("644", "649", frozenset(range(16, 20)), "discover"),
    ("65", "65", frozenset(range(16, 20)), "discover"),
    ("622126", "622925", frozenset(range(16, 20)), "discover"),
    ("36", "36", frozenset(range(14, 20)), "diners"),
    ("300", "305", frozenset(range(14, 20)), "diners"),
    ("309", "309", frozenset(range(14, 20)), "diners"),
    ("38", "39", frozenset(range(14, 20)), "diners"),
    ("3528", "3589", frozenset(range(16, 20)), "jcb"),
    ("62", "62", frozenset(range(16, 20)), "unionpay"),
    ("81", "81", frozenset(range(16, 20)), "unionpay"),
    ("2200", "2204", frozenset(range(16, 20)), "mir"),
    ("60", "60", frozenset({16}), "rupay"),
    ("82", "82", frozenset({16}), "rupay"),
    ("508", "508", frozenset({16}), "rupay"),
    ("353", "353", frozenset({16}), "rupay"),
    ("356", "356", frozenset({16}), "rupay"),
    ("5018", "5018", frozenset(range(13, 20)), "maestro"),
    ("5020", "5020", frozenset(range(13, 20)), "maestro"),
    ("5038", "5038", frozenset(range(13, 20)), "maestro"),
    ("5893", "5893", frozenset(range(13, 20)), "maestro"),
    ("6304", "6304", frozenset(range(13, 20)), "maestro"),
    ("6759", "6759", frozenset(range(13, 20)), "maestro"),
    ("6761", "6763", frozenset(range(13, 20)), "maestro"),
    ("5019", "5019", frozenset({16}), "dankort"),
    ("9792", "9792", frozenset({16}), "troy"),
    ("506099", "506198", frozenset({16, 18, 19}), "verve"),
    ("507865", "507964", frozenset({16, 18, 19}), "verve"),
    ("650002", "650027", frozenset({16, 18, 19}), "verve"),
)
PAN_MIN, PAN_MAX = 13, 19

# A run of digit groups joined by single spaces or dashes; \d is any Unicode decimal digit.
_RUN = re.compile(r"(?<!\d)\d+(?:[ \-]\d+)*(?!\d)")
_GROUP = re.compile(r"\d+")
# Cheap test before the full search: at least 13 digits in a row, single separators allowed.
_MAYBE = re.compile(r"\d(?:[ \-]?\d){12}")
# JSON escapes of characters a PAN can be written with: digits (any script), space, dash. A pair of
# surrogates escapes a digit outside the BMP (e.g. U+1D7CE, mathematical bold zero).
_ESCAPE = re.compile(r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})")
MAX_GROUPS = 64
"""A run of more digit groups than this is masked whole without checking each window of it: checking
every window of a 64 KiB run of single digits would let one record cost the worker about a second."""
MASK = "#"


def _ascii_digits(digits: str) -> str:
    return digits if digits.isascii() else "".join(str(unicodedata.digit(c)) for c in digits)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_network(digits: str) -> str | None:
    """The network whose IIN range and length ``digits`` (ASCII) fall in, or None."""
    n = len(digits)
    for low, high, lengths, network in _NETWORKS:
        if n in lengths and low <= digits[: len(low)] <= high:
            return network
    return None


def is_pan(digits: str) -> bool:
    """``digits`` (decimal digits only, any script) is a card number: length, network range and Luhn."""
    if not PAN_MIN <= len(digits) <= PAN_MAX:
        return False
    plain = _ascii_digits(digits)
    return card_network(plain) is not None and luhn_valid(plain)


def pan_spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every card number in ``text``, separators inside it included; overlapping windows
    of one run are reported separately."""
    for run in _RUN.finditer(text):
        if run.end() - run.start() < PAN_MIN:
            continue
        groups = [(m.start() + run.start(), m.end() + run.start()) for m in _GROUP.finditer(run.group())]
        if len(groups) > MAX_GROUPS:
            yield run.start(), run.end()
            continue
        for i in range(len(groups)):
            digits = ""
            for j in range(i, len(groups)):
                digits += text[groups[j][0] : groups[j][1]]
                if len(digits) > PAN_MAX:
                    break
                if len(digits) >= PAN_MIN and is_pan(digits):
                    yield groups[i][0], groups[j][1]


def has_pan(text: str) -> bool:
    return bool(_MAYBE.search(text)) and next(pan_spans(text), None) is not None


def mask_pans(text: str) -> str:
    """``text`` with the digits of every card number replaced by ``#`` (separators kept)."""
    if not _MAYBE.search(text):
        return text
    chars: list[str] | None = None
    for start, end in pan_spans(text):
        if chars is None:
            chars = list(text)
        for k in range(start, end):
            if chars[k] not in " -":
                chars[k] = MASK
    return text if chars is None else "".join(chars)


def _unescape(match: re.Match[str]) -> str:
    high, low, single = match.groups()
    if single is not None:
        char = chr(int(single, 16))
    else:
        char = chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00))
    return char if char in " -" or char.isdecimal() else match.group()


def mask_pans_in_bytes(raw: bytes) -> bytes:
    """``raw`` (any bytes: JSON, broken JSON, garbage) with every card number masked.

    Unchanged byte for byte when it holds none. Otherwise the text with JSON escapes of digits, spaces and
    dashes written out (so a PAN written as ``\\u0034\\u0031…`` is found) and the PANs' digits masked."""
    text = raw.decode("utf-8", "surrogateescape")
    unescaped = _ESCAPE.sub(_unescape, text) if "\\u" in text else text
    masked = mask_pans(unescaped)
    return raw if masked == unescaped else masked.encode("utf-8", "surrogateescape")


def may_hold_pan(raw: bytes) -> bool:
    """False only when ``raw`` cannot hold a card number in any form ``pan_spans`` finds: all ASCII, no
    JSON escape, no run of 13 digits with single separators. The fast path of the worker's check."""
    if not raw.isascii() or b"\\u" in raw:
        return True
    return _MAYBE_BYTES.search(raw) is not None


_MAYBE_BYTES = re.compile(rb"[0-9](?:[ \-]?[0-9]){12}")


def pan_field(value: object, known: frozenset[str], allowed: frozenset[str]) -> str | None:
    """The first top-level field of a parsed JSON ``value`` that holds a card number outside ``allowed``:
    its name when ``known``, else ``unknown_field`` (a sender's field name never becomes a label). Keys,
    nested values and integers are searched too."""
    if not isinstance(value, dict):
        return "record" if _holds_pan(value) else None
    for key, item in value.items():
        name = key if key in known else "unknown_field"
        if has_pan(key) or (key not in allowed and _holds_pan(item)):
            return name
    return None


def _holds_pan(value: object, depth: int = 0) -> bool:
    if isinstance(value, str):
        return has_pan(value)
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return has_pan(str(value))
    if isinstance(value, float):
        return value.is_integer() and abs(value) < 1e20 and has_pan(str(int(value)))
    if depth > 64:  # orjson refuses deeper JSON anyway
        return False
    if isinstance(value, dict):
        return any(has_pan(k) or _holds_pan(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_pan(v, depth + 1) for v in value)
    return False
