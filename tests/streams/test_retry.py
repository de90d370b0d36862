"""``retry_forever`` (streams/retry.py): transient errors are retried with capped, jittered backoff and a
warning on the first and every tenth attempt; anything else propagates at once."""

from __future__ import annotations

import logging
import time

import pytest

from features.errors import FeatureStoreUnavailable
from streams.retry import retry_forever


async def test_transient_errors_are_retried_until_the_call_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    failures = [ConnectionResetError("redis gone"), FeatureStoreUnavailable("loading")] * 6  # 12 failures
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return "done"

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="streams.retry"):
        assert await retry_forever(call, what="probe", first_delay_s=0.001, max_delay_s=0.004) == "done"
    elapsed = time.monotonic() - started
    assert calls == 13
    # 12 waits of d * [0.5, 1.5) with d = 1, 2, 4, 4, ... ms: at least 0.5 * 41 ms, and capped
    assert 0.0205 <= elapsed < 1.0
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3 and "attempt 1" in warned[0] and "attempt 10" in warned[1]
    assert "probe failed (ConnectionResetError: redis gone)" in warned[0]
    assert warned[2].startswith("probe recovered after 12 failed attempts")  # the end of the pause, said once


async def test_other_errors_propagate_at_once() -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await retry_forever(call, what="probe", first_delay_s=0.001)
    assert calls == 1


async def test_a_lambda_returning_an_awaitable_is_awaited() -> None:
    """The pipeline passes ``lambda: store.submit(events)``: its result is awaited, not returned."""
    failures = [ConnectionError("down")]

    async def submit(events: list[int]) -> list[int]:
        if failures:
            raise failures.pop()
        return events

    assert await retry_forever(lambda: submit([1, 2]), what="probe", first_delay_s=0.001) == [1, 2]
