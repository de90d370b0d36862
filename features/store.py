"""The interface between the stream and the online feature state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from features.events import LabelEvent, TransactionEvent


class OnlineFeatureStore(Protocol):
    """Applies transactions to entity state and returns their feature vectors, atomically per entity.

    ``apply_and_read`` returns a float64 array of shape ``(len(events), len(FEATURE_LIST))`` in the feature
    list's order. Applying a transaction id twice changes nothing and returns the same vector.

    ``submit`` + ``collect`` is ``apply_and_read`` in two steps, for a caller that sends the next batch
    before it reads this one's features: batches are applied in the order they are submitted, and must be
    collected in that order. The submitted batch is opaque to the caller.
    """

    async def apply_and_read(self, events: Sequence[TransactionEvent]) -> npt.NDArray[np.float64]: ...

    async def submit(self, events: Sequence[TransactionEvent]) -> Any: ...

    async def collect(self, pending: Any) -> npt.NDArray[np.float64]: ...

    async def apply_labels(self, labels: Sequence[LabelEvent]) -> None: ...

    async def close(self) -> None: ...
