"""Pure parts of scoring: policy, reason codes, rollout hashing, batcher, breaker, outage logic."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.backend import Prediction
from scoring.batcher import MicroBatcher
from scoring.breaker import CircuitBreaker
from scoring.errors import BackendUnavailable, CircuitOpen, FeatureHashMismatch
from scoring.policy import Policy, PolicyConfig, PolicyStore, reason_code, top_reasons
from scoring.resilience import ModelOutage, ResilientPredictor
from scoring.rollout import bucket, canary_mask
from scoring.scorer import Scorer


def test_reason_codes_are_stable_names() -> None:
    assert reason_code("card_tx_count_1d") == "R_CARD_TX_COUNT_1D"
    assert reason_code("terminal-risk.7d") == "R_TERMINAL_RISK_7D"


def test_top_reasons_only_positive_sorted_max_three() -> None:
    names = ["a", "b", "c", "d", "e"]
    contributions = np.array([[0.1, 2.0, -3.0, 0.5, 0.7], [-1, -1, -1, -1, 0.2]], np.float32)
    first, second = top_reasons(contributions, names)
    assert [r.feature for r in first] == ["b", "e", "d"]
    assert [r.code for r in second] == ["R_E"]


def test_thresholds_and_rules() -> None:
    policy = Policy(
        PolicyConfig(
            review_threshold=0.4,
            decline_threshold=0.8,
            blocked_cards=frozenset({"bad"}),
            amount_limits={"EUR": 1000, "*": 5000},
            review_amounts={"EUR": 300},
        )
    )
    assert policy.decide(0.1, "c", 10, "EUR") == ("approve", [])
    assert policy.decide(0.5, "c", 10, "EUR") == ("review", [])
    assert policy.decide(0.9, "c", 10, "EUR") == ("decline", [])
    assert policy.decide(0.1, "bad", 10, "EUR") == ("decline", ["BLOCKED_CARD"])
    assert policy.decide(0.1, "c", 2000, "USD") == ("approve", [])
    assert policy.decide(0.1, "c", 6000, "USD") == ("decline", ["AMOUNT_LIMIT_USD"])
    assert policy.decide(0.1, "c", 400, "EUR") == ("review", ["REVIEW_AMOUNT_EUR"])
    assert policy.decide(0.95, "c", 400, "EUR")[0] == "decline", "rules never soften the model"
    score, decision, fired = policy.decide_degraded("c", 10, "EUR")
    assert (score, decision, fired) == (0.0, "approve", ["DEGRADED"])
    assert policy.decide_degraded("bad", 10, "EUR")[1] == "decline"
    assert policy.decide_degraded("c", 600, "GBP")[1:] == ("review", ["DEGRADED", "DEGRADED_REVIEW_AMOUNT"])


def test_policy_file_reloads_at_runtime_and_survives_a_bad_edit(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"decline_threshold": 0.9}))
    store = PolicyStore(path, check_interval_s=0)
    assert store.current().decide(0.1, "x", 1, "EUR")[0] == "approve"
    path.write_text(json.dumps({"decline_threshold": 0.9, "blocked_cards": ["x"]}))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert store.current().decide(0.1, "x", 1, "EUR")[0] == "decline"
    path.write_text('{"decline_threshold": 2}')  # invalid: keep the previous policy
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    assert store.current().decide(0.1, "x", 1, "EUR")[0] == "decline"
    with pytest.raises(ValueError):
        PolicyConfig(review_threshold=0.9, decline_threshold=0.5)


def test_canary_bucket_is_deterministic_and_uniform() -> None:
    assert bucket("tx-1") == bucket("tx-1")
    mask = canary_mask([f"tx-{i}" for i in range(20_000)], 0.1)
    assert abs(mask.mean() - 0.1) < 0.01
    assert not canary_mask(["a"], 0.0).any() and canary_mask(["a"], 1.0).all()


class Recorder:
    """A stand-in predict function that records batch sizes (the batcher never sees TensorFlow)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, x: np.ndarray, label: str | None) -> Prediction:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.sizes.append(x.shape[0])
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        return Prediction(x[:, 0].copy(), x.copy(), "m", 1, label)


async def test_batcher_merges_callers_and_returns_each_its_rows() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_size=64, max_wait_s=0.01, max_in_flight=2)
    chunks = [np.full((8, 2), i, np.float32) for i in range(20)]
    results = await asyncio.gather(*(batcher.score(c) for c in chunks))
    for i, prediction in enumerate(results):
        assert prediction.scores.tolist() == [i] * 8
    assert sum(recorder.sizes) == 160 and max(recorder.sizes) <= 64 + 7 and len(recorder.sizes) < 20


async def test_batcher_bounds_calls_in_flight() -> None:
    recorder = Recorder(delay=0.02)
    batcher = MicroBatcher(recorder, max_size=4, max_wait_s=0.001, max_in_flight=2)
    await asyncio.gather(*(batcher.score(np.zeros((4, 2), np.float32)) for _ in range(10)))
    assert recorder.max_in_flight == 2


async def test_batcher_propagates_failures_to_every_caller() -> None:
    async def broken(x: np.ndarray, label: str | None) -> Prediction:
        raise BackendUnavailable("down")

    batcher = MicroBatcher(broken, max_size=100, max_wait_s=0.001)
    outcomes = await asyncio.gather(
        *(batcher.score(np.zeros((1, 2), np.float32)) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, BackendUnavailable) for o in outcomes)


def test_breaker_states() -> None:
    now = [0.0]
    breaker = CircuitBreaker(name="b", failure_threshold=2, reset_timeout_s=1.0, clock=lambda: now[0])
    breaker.record_failure()
    breaker.before_call()
    breaker.record_failure()
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    now[0] = 1.5
    breaker.before_call()  # the single half-open probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    breaker.record_success()
    assert breaker.state == "closed"


class Flaky:
    feature_list_hash: str | None = None

    def __init__(self) -> None:
        self.down = True

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def predict(self, features: np.ndarray, *, label: str | None = None) -> Prediction:
        if self.down:
            raise BackendUnavailable("down")
        return Prediction(np.zeros(len(features), np.float32), None, "m", 1, label)


async def test_resilience_retries_within_grace_then_gives_up_then_recovers() -> None:
    backend = Flaky()
    predictor = ResilientPredictor(backend, grace_s=0.1, backoff_initial_s=0.01)
    errors: list[str] = []
    predictor.on_error = lambda exc: errors.append(type(exc).__name__)
    started = time.monotonic()
    with pytest.raises(ModelOutage):
        await predictor.predict(np.zeros((1, 2), np.float32))
    assert time.monotonic() - started >= 0.09 and predictor.retries >= 2 and predictor.degraded
    retries = predictor.retries
    with pytest.raises(ModelOutage):  # already degraded: one attempt, no backoff sleeps
        await predictor.predict(np.zeros((1, 2), np.float32))
    assert predictor.retries == retries
    backend.down = False
    await predictor.predict(np.zeros((1, 2), np.float32))
    assert not predictor.degraded and predictor.outage_since is None
    assert len(errors) == predictor.retries + 2 and set(errors) == {"BackendUnavailable"}


def test_breaker_cancelled_probe_lets_the_next_call_probe() -> None:
    now = [0.0]
    breaker = CircuitBreaker(name="b", failure_threshold=1, reset_timeout_s=1.0, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 2.0
    breaker.before_call()
    breaker.release_probe()  # the probe was cancelled (e.g. a shadow call timed out)
    breaker.before_call()


async def test_batcher_sends_at_once_when_idle_and_batches_while_busy() -> None:
    recorder = Recorder(delay=0.05)
    batcher = MicroBatcher(recorder, max_size=1000, max_wait_s=10.0, max_in_flight=1)
    lone = await asyncio.wait_for(batcher.score(np.ones((3, 2), np.float32)), 1.0)  # no 10 s wait when idle
    assert lone.scores.shape == (3,)
    first = asyncio.ensure_future(batcher.score(np.ones((1, 2), np.float32)))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batcher.score(np.ones((1, 2), np.float32))) for _ in range(9)]
    await asyncio.wait_for(asyncio.gather(first, *rest), 2.0)  # flushed when the busy call ends
    assert recorder.sizes == [3, 1, 9]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30),
    max_size=st.integers(min_value=1, max_value=64),
    in_flight=st.integers(min_value=1, max_value=4),
)
def test_batcher_returns_every_caller_exactly_its_rows(sizes: list[int], max_size: int, in_flight: int) -> None:
    async def scenario() -> None:
        recorder = Recorder(delay=0.0005)
        batcher = MicroBatcher(recorder, max_size=max_size, max_wait_s=0.001, max_in_flight=in_flight)
        start = np.cumsum([0, *sizes])
        chunks = [np.arange(a, b, dtype=np.float32)[:, None].repeat(2, axis=1) for a, b in itertools.pairwise(start)]
        results = await asyncio.gather(*(batcher.score(c) for c in chunks))
        for chunk, prediction in zip(chunks, results, strict=True):
            assert prediction.scores.tolist() == chunk[:, 0].tolist()
        assert sum(recorder.sizes) == sum(sizes), "every row scored exactly once"
        assert recorder.max_in_flight <= in_flight
        await batcher.close()

    asyncio.run(scenario())


class SlowToStart:
    """A backend whose ``start`` fails with ``errors`` (one per attempt) before it succeeds."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.attempts = 0

    async def start(self) -> None:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)

    async def close(self) -> None: ...

    async def predict(self, features: np.ndarray, *, label: str | None = None) -> Prediction:
        raise AssertionError("not called")


async def test_scorer_start_waits_for_a_backend_that_is_not_up_yet() -> None:
    backend = SlowToStart(BackendUnavailable("down"), BackendUnavailable("still down"))
    scorer = Scorer(backend, model_name="m", feature_names=["a"], feature_hash="h", grace_s=5.0)
    started = time.monotonic()
    await scorer.start()
    assert backend.attempts == 3
    assert 0.3 <= time.monotonic() - started < 3.0  # waited 0.1 s, then 0.2 s
    await scorer.close()


async def test_scorer_start_gives_up_after_its_wait_and_never_retries_a_refusal() -> None:
    backend = SlowToStart(*[BackendUnavailable(f"down {i}") for i in range(100)])
    scorer = Scorer(backend, model_name="m", feature_names=["a"], feature_hash="h")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await scorer.start(wait_s=0.5)
    assert time.monotonic() - started < 0.5 and backend.attempts == 3  # 0.1 + 0.2 s waited; 0.4 s more is too long
    refused = SlowToStart(FeatureHashMismatch(model="m v1", model_hash="x", expected_hash="h"))
    with pytest.raises(FeatureHashMismatch):
        await Scorer(refused, model_name="m", feature_names=["a"], feature_hash="h").start()
    assert refused.attempts == 1
    await scorer.close()
