"""One contract, two backends: local SavedModel and TF Serving over gRPC (in-process servicer)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from scoring.errors import FeatureHashMismatch
from scoring.policy import reason_code
from scoring.rollout import bucket
from scoring.testing.model_factory import DEFAULT_FEATURES, PLANTED_FEATURE, sample_features, write_labels
from tests.fixtures.scoring import BACKENDS, Harness

pytestmark = pytest.mark.parametrize("harness", BACKENDS, indirect=True)
N_FEATURES = len(DEFAULT_FEATURES)


def reference(model_dir: Path, version: int, x: np.ndarray) -> dict[str, np.ndarray]:
    """Scores straight from the SavedModel signature, no backend in between."""
    loaded = tf.saved_model.load(str(model_dir / str(version)))
    out = loaded.signatures["serving_default"](features=tf.constant(x))
    return {k: v.numpy() for k, v in out.items()}


def meta(n: int, start: int = 0) -> dict[str, list[Any]]:
    ids = [f"tx-{i}" for i in range(start, start + n)]
    cards = [f"card-{i % 17}" for i in range(start, start + n)]
    return {"ids": ids, "card_refs": cards, "amounts": [25.0] * n, "currencies": ["EUR"] * n}


async def test_same_scores_as_the_saved_model(harness: Harness) -> None:
    backend = harness.backend()
    await backend.start()
    x = sample_features(300, seed=1)
    for label, version in (("stable", 1), ("canary", 2)):
        prediction = await backend.predict(x, label=label)
        expected = reference(harness.model_dir, version, x)
        assert prediction.model_version == version
        np.testing.assert_allclose(prediction.scores, expected["score"], rtol=1e-6, atol=1e-7)
        assert prediction.contributions is not None
        np.testing.assert_allclose(prediction.contributions, expected["contributions"], rtol=1e-5, atol=1e-6)
    empty = await backend.predict(np.zeros((0, N_FEATURES), np.float32))
    assert empty.scores.shape == (0,)


async def test_canary_share_is_deterministic_per_transaction(harness: Harness) -> None:
    scorer = harness.scorer(harness.backend(), rollout=_rollout(canary_share=0.25))
    await scorer.start()
    n = 4000
    results = await scorer.score_batch(sample_features(n), **meta(n))
    canary = [r for r in results if r.model_label == "canary"]
    assert abs(len(canary) / n - 0.25) < 0.03
    assert {r.model_version for r in canary} == {2}
    assert {r.model_version for r in results if r.model_label != "canary"} == {1}
    assert all(bucket(r.transaction_id) < 0.25 for r in canary)
    again = await scorer.score_batch(sample_features(n), **meta(n))  # a redelivery lands on the same model
    assert [r.model_version for r in again] == [r.model_version for r in results]


async def test_shadow_scores_are_reported_but_never_decide(harness: Harness) -> None:
    scorer = harness.scorer(harness.backend(), rollout=_rollout(shadow=True))
    await scorer.start()
    x = sample_features(64, seed=3)
    results = await scorer.score_batch(x, **meta(64))
    challenger = reference(harness.model_dir, 2, x)["score"]
    champion = reference(harness.model_dir, 1, x)["score"]
    assert all(r.shadow is not None and r.shadow.model_version == 2 for r in results)
    np.testing.assert_allclose([r.shadow.score for r in results if r.shadow], challenger, rtol=1e-6)
    np.testing.assert_allclose([r.score for r in results], champion, rtol=1e-6)
    assert {r.model_version for r in results} == {1}


async def test_reason_codes_name_the_planted_feature(harness: Harness) -> None:
    scorer = harness.scorer(harness.backend())
    await scorer.start()
    x = sample_features(8, seed=4)
    x[5, DEFAULT_FEATURES.index(PLANTED_FEATURE)] = 1e3
    results = await scorer.score_batch(x, **meta(8))
    planted = results[5]
    assert planted.reason_codes[0].code == reason_code(PLANTED_FEATURE) == "R_AMOUNT"
    assert planted.reason_codes[0].feature == PLANTED_FEATURE
    assert planted.score > 0.99 and planted.decision == "decline"
    for result in results:
        contributions = [c.contribution for c in result.reason_codes]
        assert len(contributions) <= 3 and all(c > 0 for c in contributions)
        assert contributions == sorted(contributions, reverse=True)


async def test_outage_mid_stream_loses_nothing_degrades_and_recovers(harness: Harness) -> None:
    backend = harness.backend()
    scorer = harness.scorer(backend, grace_s=0.3)
    await scorer.start()
    seen: list[str] = []
    degraded_batches: list[bool] = []
    batch = 50
    for i in range(30):
        if i == 3:
            harness.set_outage(backend, True)
        if i == 8:
            harness.set_outage(backend, False)
        started = time.monotonic()
        results = await scorer.score_batch(sample_features(batch, seed=i), **meta(batch, start=i * batch))
        elapsed = time.monotonic() - started
        assert [r.transaction_id for r in results] == meta(batch, start=i * batch)["ids"]
        seen.extend(r.transaction_id for r in results)
        flags = {r.degraded for r in results}
        assert len(flags) == 1
        degraded_batches.append(flags.pop())
        if i == 3:
            assert elapsed >= 0.25, "the first failing batch must wait (stream paused) before degrading"
        if i > 8 and not degraded_batches[-1]:
            break
        if i >= 8:
            await asyncio.sleep(0.05)
    assert len(seen) == len(set(seen))
    assert degraded_batches[:3] == [False] * 3
    assert all(degraded_batches[3:8])
    assert degraded_batches[-1] is False, "scoring must recover once the model server is back"
    assert not scorer.degraded


async def test_short_outage_blocks_then_scores_normally(harness: Harness) -> None:
    backend = harness.backend()
    scorer = harness.scorer(backend, grace_s=5.0)
    await scorer.start()
    harness.set_outage(backend, True)
    task = asyncio.ensure_future(scorer.score_batch(sample_features(10), **meta(10)))
    await asyncio.sleep(0.3)
    assert not task.done(), "while the model is down and within grace the caller must be blocked"
    harness.set_outage(backend, False)
    results = await asyncio.wait_for(task, 5)
    assert len(results) == 10 and not any(r.degraded for r in results)


async def test_new_version_is_picked_up_without_restart(harness: Harness) -> None:
    scorer = harness.scorer(harness.backend(poll_interval_s=0.1))
    await scorer.start()
    versions: list[set[int | None]] = []
    stop = asyncio.Event()

    async def stream() -> int:
        i, rows = 0, 0
        while not stop.is_set():
            results = await scorer.score_batch(sample_features(32, seed=i), **meta(32, start=i * 32))
            assert len(results) == 32
            versions.append({r.model_version for r in results})
            rows += len(results)
            i += 1
            await asyncio.sleep(0.005)
        return rows

    task = asyncio.ensure_future(stream())
    await asyncio.sleep(0.1)
    await asyncio.get_running_loop().run_in_executor(None, harness.export, 3)
    write_labels(harness.model_dir, {"stable": 3, "canary": 2})
    harness.versions_changed()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not versions or versions[-1] != {3}):
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert versions[0] == {1} and versions[-1] == {3}
    assert all(len(v) == 1 for v in versions), "a batch is scored by exactly one version"
    flat = [int(v.pop() or 0) for v in versions]
    assert flat == sorted(flat), "no flapping back to the old version"


async def test_feature_hash_mismatch_refuses_to_start(harness: Harness) -> None:
    backend = harness.backend(expected_hash="sha256:other-features")
    with pytest.raises(FeatureHashMismatch) as info:
        await backend.start()
    assert not info.value.retryable
    assert "sha256:other-features" in str(info.value) and "refusing to start" in str(info.value)


def _rollout(**kwargs: object):  # type: ignore[no-untyped-def]
    from scoring.rollout import RolloutConfig

    return RolloutConfig(**kwargs)  # type: ignore[arg-type]
