"""Micro-batching across concurrent callers.

Callers (several faust agents / partitions) hand in small groups of rows with ``await score(rows)``; rows
for the same label are merged into one backend call when ``max_size`` rows are waiting or the oldest waited
``max_wait_s``. At most ``max_in_flight`` backend calls run at once.

Batching only while busy: when no backend call is running, rows go out at once (a lone caller never pays
``max_wait_s``), and when a call finishes, whatever accumulated meanwhile goes out without waiting for the
timer if a slot is free. Under load batches fill up; at low load latency stays at one model call.

Backpressure is structural: every caller awaits its own rows' result, so a slow model blocks the callers
(the faust stream pauses, Kafka lag grows) and memory is bounded by callers × their batch size, never by
the input rate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from scoring.backend import Prediction

PredictFn = Callable[[npt.NDArray[np.float32], str | None], Awaitable[Prediction]]


@dataclass(slots=True)
class _Pending:
    chunks: list[npt.NDArray[np.float32]] = field(default_factory=list)
    futures: list[asyncio.Future[Prediction]] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None


class MicroBatcher:
    def __init__(
        self, predict: PredictFn, *, max_size: int = 256, max_wait_s: float = 0.005, max_in_flight: int = 4
    ) -> None:
        if max_size < 1 or max_wait_s < 0 or max_in_flight < 1:
            msg = "max_size and max_in_flight must be >= 1 and max_wait_s >= 0"
            raise ValueError(msg)
        self._predict = predict
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending: dict[str | None, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._active = 0
        self.backend_calls = 0

    async def score(self, features: npt.NDArray[np.float32], *, label: str | None = None) -> Prediction:
        """Score ``features`` (n, f), maybe merged with other callers' rows; returns this caller's rows."""
        features = np.asarray(features, dtype=np.float32)
        if features.shape[0] >= self.max_size:
            # Already a full batch (the worker's faust ``take`` usually is): no reason to wait or copy.
            self._active += 1
            try:
                return await self._send(features, label)
            finally:
                self._done()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()
        pending = self._pending.setdefault(label, _Pending())
        pending.chunks.append(features)
        pending.futures.append(future)
        pending.rows += features.shape[0]
        if pending.rows >= self.max_size or self._active == 0:
            self._flush(label)
        elif pending.timer is None:
            pending.timer = loop.call_later(self.max_wait_s, self._flush, label)
        return await future

    async def close(self) -> None:
        """Flush what is waiting and wait for every call in flight."""
        for label in list(self._pending):
            self._flush(label)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _flush(self, label: str | None) -> None:
        pending = self._pending.pop(label, None)
        if pending is None or not pending.futures:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        # Counted from now (not when the task first runs): callers arriving meanwhile must see a busy backend.
        self._active += 1
        task = asyncio.get_running_loop().create_task(self._run(pending, label))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, features: npt.NDArray[np.float32], label: str | None) -> Prediction:
        async with self._slots:
            self.backend_calls += 1
            return await self._predict(features, label)

    def _done(self) -> None:
        self._active -= 1
        # A slot is free again: send what accumulated instead of waiting for the timer.
        for waiting in list(self._pending):
            if self._active < self.max_in_flight:
                self._flush(waiting)

    async def _run(self, pending: _Pending, label: str | None) -> None:
        batch = pending.chunks[0] if len(pending.chunks) == 1 else np.concatenate(pending.chunks)
        try:
            prediction = await self._send(batch, label)
        except BaseException as exc:  # every waiting caller must hear about the failure
            for future in pending.futures:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._done()
        start = 0
        for chunk, future in zip(pending.chunks, pending.futures, strict=True):
            stop = start + chunk.shape[0]
            if not future.done():
                future.set_result(slice_prediction(prediction, start, stop))
            start = stop


def slice_prediction(prediction: Prediction, start: int, stop: int) -> Prediction:
    contributions = prediction.contributions[start:stop] if prediction.contributions is not None else None
    return Prediction(
        prediction.scores[start:stop],
        contributions,
        prediction.model_name,
        prediction.model_version,
        prediction.model_label,
    )
