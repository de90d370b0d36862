"""Batched publishing through the faust app's own producer (much faster than ``topic.send`` per event)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import faust

from streams.messages import OutboundMessage


class FaustPublisher:
    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        if not messages:
            return
        producer = self._app.producer
        pending = [
            await producer.send(m.topic, m.key, m.value, partition=None, timestamp=None, headers=None)
            for m in messages
        ]
        # At-least-once: the batch counts as done only when the broker acknowledged every record.
        await asyncio.gather(*pending)
