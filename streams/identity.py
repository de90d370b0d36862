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
