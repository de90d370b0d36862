"""Traffic split between the champion (``stable``) and the challenger (``canary``).

The canary share is decided per transaction id by a keyed-free, process-independent hash (BLAKE2b), not by
Python's salted ``hash()``: a redelivered or retried transaction lands on the same model in every worker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_SCALE = float(2**64)


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutConfig:
    canary_share: float = 0.0
    """Share of transactions whose decision comes from the ``canary`` label."""
    shadow: bool = False
    """Score every transaction with the challenger too; its score is reported, never decides."""
    stable_label: str = "stable"
    canary_label: str = "canary"

    def __post_init__(self) -> None:
        if not 0.0 <= self.canary_share <= 1.0:
            msg = f"canary_share must be within [0, 1], got {self.canary_share}"
            raise ValueError(msg)


def bucket(transaction_id: str) -> float:
    """A uniform value in [0, 1) that depends only on the transaction id."""
    digest = hashlib.blake2b(transaction_id.encode(), digest_size=8, person=b"fs-canary").digest()
    return int.from_bytes(digest, "big") / _SCALE


def canary_mask(ids: Sequence[str], share: float) -> npt.NDArray[np.bool_]:
    """True for the rows the canary decides."""
    if share <= 0.0:
        return np.zeros(len(ids), dtype=bool)
    if share >= 1.0:
        return np.ones(len(ids), dtype=bool)
    return np.fromiter((bucket(i) < share for i in ids), dtype=bool, count=len(ids))
