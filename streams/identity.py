"""Card numbers never leave the worker in clear: Redis keys and topics carry a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache


class CardHasher:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self.reference = lru_cache(maxsize=200_000)(self._reference)

    def _reference(self, card_id: str) -> str:
        # 128 bits of HMAC-SHA256: collision-free at any card population, short in keys and records.
        return hmac.new(self._secret, card_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def content_hash(card_ref: str, terminal_id: str, amount: float, currency: str, event_time: float,
                 latitude: float | None, longitude: float | None) -> str:
    """Fingerprint of a validated transaction's content: two records with one id are the same transaction
    exactly when these agree. Built on the card's keyed hash, never the card number (a plain hash of a
    PAN with the other fields known could be searched); times as epoch seconds, so ``…T01:00:00+01:00``
    and ``…T00:00:00Z`` are the same content, and amounts as the float they parse to (``12.5`` = ``12.50``)."""
    canonical = f"{card_ref}|{terminal_id}|{amount!r}|{currency}|{event_time!r}|{latitude!r}|{longitude!r}"
    return hashlib.blake2b(canonical.encode(), digest_size=16, person=b"fs-content").hexdigest()
