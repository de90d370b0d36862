"""The trainer service: one job at a time, fed by the CLI, an HTTP endpoint and the retrain-requests topic.

Every trigger becomes a validated ``RetrainRequest`` handed to ``TrainerService.submit``; a single worker
task runs the jobs in order in a thread (training blocks), and each state change (queued, running with
progress, succeeded, failed) is kept for ``GET /retrain/{id}`` and passed to a publisher (the
``retrain-status`` topic in production).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from schemas.retrain import RetrainRequest, RetrainStatus
from training.errors import TrainerBusy, TrainingError

log = logging.getLogger(__name__)

JobRunner = Callable[[RetrainRequest, Callable[[str], None]], dict[str, Any]]
"""Runs one request (blocking, in a worker thread); gets a progress callback; returns the job summary."""
Publisher = Callable[[RetrainStatus], Awaitable[None]]


def _now() -> datetime:
    return datetime.now(UTC)


class TrainerService:
    def __init__(self, run_job: JobRunner, publish: Publisher | None = None, *, max_queued: int = 8) -> None:
        self._run_job = run_job
        self._publish = publish
        self._queue: asyncio.Queue[RetrainRequest] = asyncio.Queue(maxsize=max_queued)
        self._statuses: dict[str, RetrainStatus] = {}
        self._results: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    # --- state -------------------------------------------------------------------------------------
    def status(self, request_id: str) -> RetrainStatus | None:
        return self._statuses.get(request_id)

    def result(self, request_id: str) -> dict[str, Any] | None:
        return self._results.get(request_id)

    def statuses(self) -> list[RetrainStatus]:
        return list(self._statuses.values())

    def free_slots(self) -> int:
        """How many more requests the queue takes now (the topic consumer fetches no more than that)."""
        return max(0, self._queue.maxsize - self._queue.qsize())

    async def _set(self, status: RetrainStatus) -> None:
        self._statuses[status.request_id] = status
        if self._publish is not None:
            try:
                await self._publish(status)
            except Exception:  # a status topic outage must not kill the trainer; HTTP still has it
                log.exception("could not publish status of %s", status.request_id)

    # --- intake ------------------------------------------------------------------------------------
    async def submit(self, request: RetrainRequest, *, wait: bool = False) -> RetrainStatus:
        """Queue a request; a request id already queued or running is refused (idempotent redelivery).

        With ``wait`` a full queue blocks (back-pressure for the topic consumer) instead of refusing.
        """
        current = self._statuses.get(request.request_id)
        if current is not None and current.state in ("queued", "running"):
            msg = f"request {request.request_id} is already {current.state}"
            raise TrainerBusy(msg)
        try:
            if wait:
                await self._queue.put(request)
            else:
                self._queue.put_nowait(request)
        except asyncio.QueueFull as exc:
            msg = f"trainer queue is full ({self._queue.maxsize} requests waiting)"
            raise TrainerBusy(msg) from exc
        status = RetrainStatus(
            request_id=request.request_id,
            state="queued",
            message=f"position {self._queue.qsize()} in queue",
            at=_now(),
        )
        await self._set(status)
        return status

    # --- the single worker ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._worker(), name="trainer-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def join(self) -> None:
        """Wait until every queued job has finished (tests, ``fraudstream retrain``)."""
        await self._queue.join()

    async def _worker(self) -> None:
        while True:
            request = await self._queue.get()
            try:
                await self.run_one(request)
            finally:
                self._queue.task_done()

    async def run_one(self, request: RetrainRequest) -> RetrainStatus:
        loop = asyncio.get_running_loop()
        rid = request.request_id
        await self._set(RetrainStatus(request_id=rid, state="running", message="started", at=_now()))
        pending: set[asyncio.Future[None]] = set()

        def progress(message: str) -> None:
            # Called from the training thread: hop onto the loop to update and publish.
            status = RetrainStatus(request_id=rid, state="running", message=message[:1000], at=_now())
            fut = asyncio.run_coroutine_threadsafe(self._set(status), loop)
            pending.add(asyncio.wrap_future(fut, loop=loop))

        try:
            result = await asyncio.to_thread(self._run_job, request, progress)
        except Exception as exc:
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            kind = "training error" if isinstance(exc, TrainingError) else type(exc).__name__
            log.exception("retrain %s failed", rid)
            final = RetrainStatus(request_id=rid, state="failed", message=f"{kind}: {exc}"[:1000], at=_now())
            await self._set(final)
            return final
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._results[rid] = result
        gate = result.get("gate") or {}
        # Records refuse NaN (undefined metrics on a one-class holdout); leave those out.
        metrics = {k: float(v) for k, v in result.get("metrics", {}).items() if math.isfinite(float(v))}
        final = RetrainStatus(
            request_id=rid,
            state="succeeded",
            message=str(gate.get("reason", "exported")),
            model_version=result.get("version"),
            promoted_to=gate.get("promoted_to"),
            metrics=metrics,
            at=_now(),
        )
        await self._set(final)
        return final
