"""Micro-batches through the pipeline's two stages, merging what arrives while the pipeline is busy.

faust's ``take`` stops filling its buffer while the agent holds a batch, and after the agent hands the
batch back it waits its full ``within`` for the next one, however many records are already queued.
Waiting for room inside the agent therefore cost both: no records were collected during the wait, and
every batch paid the window again (at 5,000 tx/s offered a worker made batches of ~190 records, a fixed
~30 ms each, and fell behind the load it could carry with a backlog).

``BatchFlow`` takes each batch from the agent at once and queues its items (the worker's are already
validated, see ``TransactionPipeline.check``). One driver prepares (applies to Redis) up to ``max_batch``
queued items at a time, in order; finishing (score, publish, ack) runs behind it, in order, at most
``max_finishing`` batches at a time. Whatever queues up while a stage is busy becomes the next, larger
batch: small batches when the load is light (latency), full ones when it is heavy (throughput). The agent
waits only when more than ``max_pending`` items queue up: that is the backpressure on the consumer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

E = TypeVar("E")
P = TypeVar("P")


class BatchFlow(Generic[E, P]):
    def __init__(
        self,
        prepare: Callable[[list[E]], Awaitable[P]],
        finish: Callable[[P, list[E]], Awaitable[None]],
        *,
        max_batch: int,
        max_pending: int,
        max_finishing: int,
    ) -> None:
        if max_batch < 1 or max_finishing < 1 or max_pending < max_batch:
            msg = f"need max_batch >= 1, max_finishing >= 1, max_pending >= max_batch ({max_batch=}, " \
                  f"{max_pending=}, {max_finishing=})"
            raise ValueError(msg)
        self._prepare, self._finish = prepare, finish
        self._max_batch, self._max_pending, self._max_finishing = max_batch, max_pending, max_finishing
        self._pending: list[E] = []
        self._room = asyncio.Event()
        self._driver: asyncio.Task[None] | None = None
        self._finishing: deque[asyncio.Task[None]] = deque()
        self.batches = 0
        """Prepared batches so far (their mean size shows how much merging happens)."""

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def submit(self, events: list[E]) -> None:
        """Queue a batch's events; returns at once unless more than ``max_pending`` are queued."""
        self._pending.extend(events)
        if self._driver is None:
            self._driver = asyncio.ensure_future(self._drive())
        while len(self._pending) > self._max_pending:
            self._room.clear()
            await self._room.wait()

    async def drain(self) -> None:
        """Wait until every queued event is finished."""
        while self._driver is not None:
            await asyncio.shield(self._driver)
        while self._finishing:
            await self._finishing.popleft()

    async def _drive(self) -> None:
        try:
            while self._pending:
                events = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                self._room.set()
                prepared = await self._prepare(events)
                self.batches += 1
                while self._finishing and self._finishing[0].done():
                    self._finishing.popleft().result()
                while len(self._finishing) >= self._max_finishing:
                    await self._finishing.popleft()
                previous = self._finishing[-1] if self._finishing else None
                self._finishing.append(asyncio.ensure_future(self._finish_after(previous, prepared, events)))
        finally:
            self._driver = None

    async def _finish_after(self, previous: asyncio.Task[None] | None, prepared: P, events: list[E]) -> None:
        if previous is not None:
            await asyncio.shield(previous)  # batches finish (publish, ack) in the order they were prepared
        await self._finish(prepared, events)
