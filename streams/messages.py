"""Messages as the stream handlers see them: a small value type between faust's events and our code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class InboundMessage(Protocol):
    """What the handlers read of a consumed record. faust's ``Message`` has these attributes, so the
    worker passes faust's messages through without copying each into another object."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> float | None:
        """Kafka record timestamp in epoch seconds (the producer's send time)."""


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    topic: str
    key: bytes | None
    value: bytes


class Publisher(Protocol):
    """Publishes a batch and returns only once the broker acknowledged every record."""

    async def publish(self, messages: Sequence[OutboundMessage]) -> None: ...
