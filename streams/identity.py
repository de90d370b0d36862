"""Card numbers never leave the worker in clear: Redis keys and topics carry a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import struct
from functools import lru_cache


class CardHasher:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self.reference = lru_cache(maxsize=200_000)(self._reference)

    def _reference(self, card_id: str) -> str:
        # 128 bits of HMAC-SHA256: collision-free at any card population, short in keys and records.
        return hmac.new(self._secret, card_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


_NUMBERS = struct.Struct("<dddd")
_NAN = float("nan")


def content_hash(card_ref: str, terminal_id: str, amount: float, currency: str, event_time: float,
                 latitude: float | None, longitude: float | None) -> str:
    """Fingerprint of a validated transaction's content: two records with one id are the same transaction
    exactly when these agree. Built on the card's keyed hash, never the card number (a plain hash of a
    PAN with the other fields known could be searched); times as epoch seconds, so ``…T01:00:00+01:00``
    and ``…T00:00:00Z`` are the same content, and amounts as the float they parse to (``12.5`` = ``12.50``).
    Numbers are packed as float64 rather than formatted: the worker computes this for every record."""
    numbers = _NUMBERS.pack(amount + 0.0, event_time, _NAN if latitude is None else latitude + 0.0,
                            _NAN if longitude is None else longitude + 0.0)
    text = f"{card_ref}\x1f{terminal_id}\x1f{currency}\x1f".encode()
    return hashlib.blake2b(text + numbers, digest_size=16, person=b"fs-content").hexdigest()
