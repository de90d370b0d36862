"""Micro-batches through the pipeline's stages, merging what arrives while the pipeline is busy.

The agent hands each chunk of records to ``BatchFlow`` and takes the next at once; the flow queues the
items (the worker's are already validated, see ``TransactionPipeline.check``). A driver cuts the queue into
batches of up to ``max_batch`` items and moves each through three stages, in order:

- ``start`` (send the batch to the feature state) runs in the driver, so batches start in queue order;
- ``complete`` (read the batch's features) runs behind the previous batch's ``complete``. Up to
  ``max_preparing`` batches are between ``start`` and the end of ``complete``: Redis works on the next
  batch while the worker turns this one's replies into features;
- ``finish`` (score, publish, ack) runs behind the previous batch's ``finish``, at most
  ``max_finishing`` batches at a time.

Whatever queues up while the stages are busy becomes the next, larger batch: small batches when the load
is light (latency), full ones when it is heavy (throughput). The agent waits only when more than
``max_pending`` items queue up: that is the backpressure on the consumer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

E = TypeVar("E")
S = TypeVar("S")
P = TypeVar("P")


class BatchFlow(Generic[E, S, P]):
    def __init__(
        self,
        start: Callable[[list[E]], Awaitable[S]],
        complete: Callable[[S], Awaitable[P]],
        finish: Callable[[P, list[E]], Awaitable[None]],
        *,
        max_batch: int,
        max_pending: int,
        max_preparing: int = 2,
        max_finishing: int,
    ) -> None:
        if max_batch < 1 or max_preparing < 1 or max_finishing < 1 or max_pending < max_batch:
            msg = f"need max_batch, max_preparing, max_finishing >= 1 and max_pending >= max_batch " \
                  f"({max_batch=}, {max_pending=}, {max_preparing=}, {max_finishing=})"
            raise ValueError(msg)
        self._start, self._complete, self._finish = start, complete, finish
        self._max_batch, self._max_pending = max_batch, max_pending
        self._max_preparing, self._max_finishing = max_preparing, max_finishing
        self._pending: list[E] = []
        self._room = asyncio.Event()
        self._arrived = asyncio.Event()
        self._driver: asyncio.Task[None] | None = None
        self._preparing: deque[tuple[asyncio.Task[P], list[E]]] = deque()
        self._finishing: deque[asyncio.Task[None]] = deque()
        self.batches = 0
        """Batches started so far (their mean size shows how much merging happens)."""
        self.failure: BaseException | None = None
        """The error that ended the driver (a failed ``start`` or ``complete``), raised again by ``drain``."""

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def submit(self, events: list[E]) -> None:
        """Queue a batch's events; returns at once unless more than ``max_pending`` are queued."""
        self._pending.extend(events)
        self._arrived.set()
        if self._driver is None:
            self._driver = asyncio.ensure_future(self._drive())
            self._driver.add_done_callback(self._driver_done)
        while len(self._pending) > self._max_pending:
            self._room.clear()
            await self._room.wait()

    async def drain(self) -> None:
        """Wait until every queued event is finished; raises the error that ended the driver, if any."""
        while self._driver is not None:
            await asyncio.shield(self._driver)
        while self._finishing:
            await self._finishing.popleft()
        if self.failure is not None:
            raise self.failure

    def _driver_done(self, driver: asyncio.Future[None]) -> None:
        # Retrieved here, so a failure is reported once, by ``drain``, not as "never retrieved" at exit.
        if not driver.cancelled() and driver.exception() is not None and self.failure is None:
            self.failure = driver.exception()

    async def abandon(self) -> None:
        """After a failure: cancel what is in flight and collect every task's outcome (a batch that never
        finished is never acked; its records are redelivered)."""
        tasks: list[asyncio.Future[Any]] = [task for task, _ in self._preparing]
        tasks += self._finishing
        if self._driver is not None:
            tasks.append(self._driver)
        self._pending.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._preparing.clear()
        self._finishing.clear()

    async def _drive(self) -> None:
        preparing = self._preparing
        try:
            while self._pending or preparing:
                while self._pending and len(preparing) < self._max_preparing:
                    events = self._pending[: self._max_batch]
                    del self._pending[: self._max_batch]
                    self._room.set()
                    started = await self._start(events)
                    self.batches += 1
                    previous = preparing[-1][0] if preparing else None
                    preparing.append((asyncio.ensure_future(self._complete_after(previous, started)), events))
                head, events = preparing[0]
                if not head.done() and len(preparing) < self._max_preparing:
                    # room for another batch: start it as soon as events arrive, not after this one
                    self._arrived.clear()
                    arrival = asyncio.ensure_future(self._arrived.wait())
                    await asyncio.wait((head, arrival), return_when=asyncio.FIRST_COMPLETED)
                    arrival.cancel()
                    if not head.done():
                        continue
                prepared = await head
                preparing.popleft()
                await self._finish_in_order(prepared, events)
        finally:
            self._driver = None

    async def _complete_after(self, previous: asyncio.Task[P] | None, started: S) -> P:
        if previous is not None:
            await asyncio.wait((previous,))  # batches complete in the order they started
        return await self._complete(started)

    async def _finish_in_order(self, prepared: P, events: list[E]) -> None:
        while self._finishing and self._finishing[0].done():
            self._finishing.popleft().result()
        while len(self._finishing) >= self._max_finishing:
            await self._finishing.popleft()
        previous = self._finishing[-1] if self._finishing else None
        self._finishing.append(asyncio.ensure_future(self._finish_after(previous, prepared, events)))

    async def _finish_after(self, previous: asyncio.Task[None] | None, prepared: P, events: list[E]) -> None:
        if previous is not None:
            await asyncio.shield(previous)  # batches finish (publish, ack) in the order they were prepared
        await self._finish(prepared, events)
