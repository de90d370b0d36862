"""A bad model version — it cannot load, has another feature hash, fails its warm-up, or outputs NaN — is refused
by the embedded backend's hot reload; the version that served keeps serving and the refusal is reported once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from scoring.errors import ScoringError
from scoring.local import LocalBackend, vet_version
from scoring.rollout import RolloutConfig
from scoring.scorer import Scorer
from scoring.testing.model_factory import DEFAULT_FEATURES, sample_features, write_labels
from scoring.vetting import rejection_reason
from tests.fixtures.models import BAD_KINDS, BadKind, export_bad_version
from tests.fixtures.scoring import FEATURE_HASH, MODEL


def bad(model_dir: Path, kind: BadKind, version: int) -> Path:
    return export_bad_version(model_dir, kind, version, feature_names=DEFAULT_FEATURES, feature_hash=FEATURE_HASH)


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_vet_version_names_the_reason(model_dir: Path, kind: BadKind) -> None:
    vet_version(model_dir / "1", expected_feature_hash=FEATURE_HASH)  # a good version passes
    with pytest.raises(ScoringError) as refused:
        vet_version(bad(model_dir, kind, 5), expected_feature_hash=FEATURE_HASH)
    assert rejection_reason(refused.value) == kind


@pytest.mark.parametrize("kind", BAD_KINDS)
async def test_hot_reload_refuses_a_bad_stable_and_keeps_serving(
    model_dir: Path, kind: BadKind, caplog: pytest.LogCaptureFixture
) -> None:
    backend = LocalBackend(model_dir, expected_feature_hash=FEATURE_HASH, poll_interval_s=0)
    refused: list[tuple[str, int, str]] = []
    backend.on_rejected = lambda model, version, reason: refused.append((model, version, reason))
    await backend.start()
    bad(model_dir, kind, 3)
    write_labels(model_dir, {"stable": 3, "canary": 2})
    with caplog.at_level(logging.ERROR, logger="scoring.local"):
        await backend.reload()
    assert backend.labels == {"stable": 1, "canary": 2}
    prediction = await backend.predict(sample_features(4))
    assert prediction.model_version == 1 and prediction.scores.shape == (4,)
    assert refused == [(MODEL, 3, kind)]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"v3 refused for label 'stable' ({kind})" in m and "v1 keeps serving" in m for m in errors), errors
    # Remembered: a later change of the repository neither loads nor reports it again.
    write_labels(model_dir, {"stable": 3})
    assert await backend.reload()
    assert backend.labels == {"stable": 1} and refused == [(MODEL, 3, kind)]
    await backend.close()


async def test_newest_version_without_labels_file_is_refused_when_it_outputs_nan(model_dir: Path) -> None:
    (model_dir / "labels.json").unlink()  # stable = the newest version: a dropped-in version is picked up
    backend = LocalBackend(model_dir, expected_feature_hash=FEATURE_HASH, poll_interval_s=0)
    await backend.start()
    assert backend.labels == {"stable": 2}
    bad(model_dir, "non_finite", 3)
    await backend.reload()
    assert backend.labels == {"stable": 2}
    assert (await backend.predict(sample_features(2))).model_version == 2
    await backend.close()


async def test_start_refuses_a_bad_stable(model_dir: Path) -> None:
    bad(model_dir, "non_finite", 3)
    write_labels(model_dir, {"stable": 3})
    backend = LocalBackend(model_dir, expected_feature_hash=FEATURE_HASH, poll_interval_s=0)
    with pytest.raises(ScoringError, match="NaN or infinite"):
        await backend.start()
    await backend.close()


async def test_a_refused_canary_sends_its_share_to_stable_not_to_rules(model_dir: Path) -> None:
    write_labels(model_dir, {"stable": 1})
    backend = LocalBackend(model_dir, expected_feature_hash=FEATURE_HASH, poll_interval_s=0)
    scorer = Scorer(backend, model_name=MODEL, feature_names=DEFAULT_FEATURES, feature_hash=FEATURE_HASH,
                    rollout=RolloutConfig(canary_share=0.5, shadow=True))
    refused: list[tuple[str, int, str]] = []
    scorer.on_model_rejected = lambda model, version, reason: refused.append((model, version, reason))
    await scorer.start()
    bad(model_dir, "non_finite", 3)
    write_labels(model_dir, {"stable": 1, "canary": 3})
    await backend.reload()
    ids = [f"t{i}" for i in range(60)]
    results = await scorer.score_batch(sample_features(60), ids=ids, card_refs=ids, amounts=[1.0] * 60,
                                       currencies=["EUR"] * 60)
    assert {r.model_version for r in results} == {1} and not any(r.degraded for r in results)
    assert refused == [(MODEL, 3, "non_finite")]
    await scorer.close()
