"""Messages as the stream handlers see them: a small value type between faust's events and our code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None
    """Kafka record timestamp in epoch seconds (the producer's send time)."""


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    topic: str
    key: bytes | None
    value: bytes


class Publisher(Protocol):
    """Publishes a batch and returns only once the broker acknowledged every record."""

    async def publish(self, messages: Sequence[OutboundMessage]) -> None: ...
