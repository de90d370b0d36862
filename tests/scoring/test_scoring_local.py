"""Local-backend specifics: refusing an incompatible new version, labels.json handling."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from config.errors import BadBackendUri
from config.model import parse_backend_uri
from scoring.errors import LabelNotFound
from scoring.factory import open_backend
from scoring.local import LocalBackend
from scoring.testing.model_factory import export_model, sample_features, write_labels
from scoring.tfserving import TFServingBackend
from tests.fixtures.scoring import FEATURE_HASH, MODEL


async def test_refuses_incompatible_new_version_and_keeps_serving(model_dir: Path) -> None:
    backend = LocalBackend(model_dir, expected_feature_hash=FEATURE_HASH, poll_interval_s=0)
    await backend.start()
    export_model(model_dir.parent, model_name=MODEL, version=7, feature_hash="sha256:someone-elses")
    write_labels(model_dir, {"stable": 7, "canary": 2})
    await backend.reload()
    assert backend.labels["stable"] == 1, "an incompatible version must never serve"
    assert (await backend.predict(sample_features(2))).model_version == 1
    await backend.close()


async def test_newest_version_is_stable_without_labels_file(model_dir: Path) -> None:
    (model_dir / "labels.json").unlink()
    backend = LocalBackend(model_dir, expected_feature_hash=FEATURE_HASH, poll_interval_s=0)
    await backend.start()
    assert backend.labels == {"stable": 2}
    with pytest.raises(LabelNotFound):
        await backend.predict(sample_features(1), label="canary")
    await backend.close()


async def test_half_exported_version_is_ignored(model_dir: Path) -> None:
    (model_dir / "9").mkdir()  # a trainer still writing: no saved_model.pb yet
    backend = LocalBackend(model_dir, expected_feature_hash=FEATURE_HASH, poll_interval_s=0)
    await backend.start()
    assert 9 not in backend.labels.values()
    await backend.close()


async def test_swap_under_concurrent_load_loses_and_duplicates_nothing(model_dir: Path) -> None:
    backend = LocalBackend(model_dir, expected_feature_hash=FEATURE_HASH, poll_interval_s=0.05)
    await backend.start()
    export_model(model_dir.parent, model_name=MODEL, version=3)
    calls = [backend.predict(sample_features(16, seed=i)) for i in range(200)]
    write_labels(model_dir, {"stable": 3})
    predictions = await asyncio.gather(*calls)
    assert all(p.scores.shape == (16,) for p in predictions)
    deadline = asyncio.get_running_loop().time() + 10
    while backend.labels.get("stable") != 3 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert (await backend.predict(sample_features(1))).model_version == 3
    await backend.close()


def test_backend_uris() -> None:
    local = parse_backend_uri("local:///srv/models/fraud_dnn")
    assert local.kind == "local" and local.model_name == "fraud_dnn" and str(local.path) == "/srv/models/fraud_dnn"
    remote = parse_backend_uri("tfserving://tfs:8500/fraud_dnn?label=canary&deadline_ms=250&signature=s")
    assert (remote.target, remote.label, remote.deadline_s, remote.signature) == (
        "tfs:8500",
        "canary",
        0.25,
        "s",
    )
    assert parse_backend_uri("tfserving://tfs/fraud_dnn?version=4").version == 4
    for bad in (
        "http://x/y",
        "local://relative/path",
        "tfserving://h:1/m?label=a&version=2",
        "tfserving://h:1/m?x=1",
    ):
        with pytest.raises(BadBackendUri):
            parse_backend_uri(bad)
    assert isinstance(open_backend("tfserving://h:1/m", expected_feature_hash=None), TFServingBackend)
    assert isinstance(open_backend("local:///tmp/m", expected_feature_hash=None), LocalBackend)


async def test_scorer_from_settings_with_policy_file(model_dir: Path, tmp_path: Path) -> None:
    from config.settings import Settings
    from scoring import Scorer
    from scoring.testing.model_factory import DEFAULT_FEATURES

    policy = tmp_path / "policy.json"
    policy.write_text('{"blocked_cards": ["blocked"], "amount_limits": {"EUR": 100}}')
    settings = Settings(
        home=tmp_path, model_backend=f"local://{model_dir}", policy_file=policy, canary_share=0.5, shadow=True
    )
    scorer = Scorer.from_settings(settings, feature_names=DEFAULT_FEATURES, feature_hash=FEATURE_HASH)
    await scorer.start()
    ids = [f"tx-{i}" for i in range(40)]
    cards = ["blocked" if i == 0 else f"c{i}" for i in range(40)]
    amounts = [500.0 if i == 1 else 10.0 for i in range(40)]
    results = await scorer.score_batch(
        sample_features(40), ids=ids, card_refs=cards, amounts=amounts, currencies=["EUR"] * 40
    )
    assert results[0].decision == "decline" and results[0].rules_fired == ["BLOCKED_CARD"]
    assert results[1].decision == "decline" and "AMOUNT_LIMIT_EUR" in results[1].rules_fired
    assert {r.model_label for r in results} == {"stable", "canary"}
    assert all(r.shadow is not None for r in results)
    fields = results[2].record_fields()
    assert fields["feature_list_hash"] == FEATURE_HASH and fields["degraded"] is False
    await scorer.close()


async def test_missing_canary_label_sends_its_share_to_stable_without_a_call_per_batch(model_dir: Path) -> None:
    from scoring.rollout import RolloutConfig
    from scoring.scorer import Scorer
    from scoring.testing.model_factory import DEFAULT_FEATURES

    write_labels(model_dir, {"stable": 1})
    backend = LocalBackend(model_dir, expected_feature_hash=FEATURE_HASH, poll_interval_s=0)
    scorer = Scorer(
        backend,
        model_name=MODEL,
        feature_names=DEFAULT_FEATURES,
        feature_hash=FEATURE_HASH,
        rollout=RolloutConfig(canary_share=0.5, shadow=True),
    )
    await scorer.start()
    ids = [f"t{i}" for i in range(50)]
    for _ in range(3):
        results = await scorer.score_batch(
            sample_features(50), ids=ids, card_refs=ids, amounts=[1.0] * 50, currencies=["EUR"] * 50
        )
        assert {r.model_version for r in results} == {1} and not any(r.degraded for r in results)
        assert all(r.shadow is None for r in results)
    # First batch: stable, canary (missing), canary's rows again on stable; then one call per batch.
    assert scorer.batcher.backend_calls == 3 + 1 + 1
    await scorer.close()
