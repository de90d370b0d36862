from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from config.settings import load_settings
from fraudstream.cli import main
from fraudstream.cli.training import resolve_provider
from training.errors import RegistryError, StreamPathUnavailable
from training.evaluate import OfflineScores
from training.registry import GateConfig, ModelRegistry


def _fake_version(registry: ModelRegistry, version: int) -> None:
    (registry.model_dir / str(version) / "assets.extra").mkdir(parents=True)


def test_versions_only_grow(repo: Path) -> None:
    reg = ModelRegistry(repo, "fraud_dnn")
    assert reg.next_version() == 1
    _fake_version(reg, 1)
    _fake_version(reg, 3)
    assert reg.versions() == [1, 3] and reg.next_version() == 4


def test_gate_first_version_becomes_stable_then_canary_only_if_better(repo: Path) -> None:
    reg = ModelRegistry(repo, "fraud_dnn")
    gate = GateConfig(metric="average_precision", margin=0.01)
    _fake_version(reg, 1)
    assert reg.gate(1, {"average_precision": 0.5}, None, gate).promoted_to == "stable"
    _fake_version(reg, 2)
    # Not better by the margin: labels unchanged.
    d = reg.gate(2, {"average_precision": 0.505}, {"average_precision": 0.5}, gate)
    assert d.promoted_to is None and reg.labels() == {"stable": 1}
    _fake_version(reg, 3)
    d = reg.gate(3, {"average_precision": 0.52}, {"average_precision": 0.5}, gate)
    assert d.promoted_to == "canary"
    assert json.loads((reg.model_dir / "labels.json").read_text()) == {"canary": 3, "stable": 1}
    # A stable model that could not be scored on the holdout blocks the promotion.
    _fake_version(reg, 4)
    assert reg.gate(4, {"average_precision": 0.9}, None, gate).promoted_to is None


def test_promote_rollback_and_models_config(repo: Path) -> None:
    reg = ModelRegistry(repo, "fraud_dnn")
    for v in (1, 2):
        _fake_version(reg, v)
    reg.set_label("stable", 1)
    reg.set_label("canary", 2)
    config = (repo / "models.config").read_text()
    assert 'version_labels { key: "stable" value: 1 }' in config
    assert 'version_labels { key: "canary" value: 2 }' in config
    assert "versions: 1 versions: 2" in config and 'name: "fraud_dnn"' in config
    assert reg.promote() == {"stable": 2}  # the canary becomes stable and stops being a canary
    assert 'key: "canary"' not in (repo / "models.config").read_text()
    assert reg.rollback() == {"stable": 1}
    with pytest.raises(RegistryError):
        reg.rollback()  # version 1 never had an earlier stable
    with pytest.raises(RegistryError):
        reg.promote(7)


def test_rollback_canary_drops_label(repo: Path) -> None:
    reg = ModelRegistry(repo, "fraud_dnn")
    for v in (1, 2):
        _fake_version(reg, v)
    reg.set_label("stable", 1)
    reg.set_label("canary", 2)
    assert reg.rollback("canary") == {"stable": 1}
    assert [r["label"] for r in reg.describe()["versions"]] == ["stable", None]


def test_evaluate_resolves_each_score_path(tmp_path: Path) -> None:
    from fraudstream.evaluation import StreamScores

    settings = load_settings(home=tmp_path)
    assert isinstance(resolve_provider("offline", settings), OfflineScores)
    stream = resolve_provider("stream", settings)
    assert isinstance(stream, StreamScores) and stream.name == "stream"
    with pytest.raises(StreamPathUnavailable, match="unknown score path 'carrier-pigeon'"):
        resolve_provider("carrier-pigeon", settings)


def test_a_broken_stream_path_import_is_loud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream path that cannot be imported is a broken installation: its ImportError surfaces as it is
    (it used to become "this build does not have it yet; use --via offline")."""
    monkeypatch.setitem(sys.modules, "fraudstream.evaluation", None)  # any import of it now raises ImportError
    with pytest.raises(ImportError, match=r"fraudstream\.evaluation"):
        resolve_provider("stream", load_settings(home=tmp_path))


def test_models_cli_lists_and_promotes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUD_HOME", str(tmp_path))
    for v in (1, 2):
        (tmp_path / "models" / "fraud_dnn" / str(v)).mkdir(parents=True)
    assert main(["models", "promote", "--version", "1", "--json"]) == 0
    assert main(["models", "promote", "--version", "2", "--label", "canary", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert listed["labels"] == {"stable": 1, "canary": 2}
    assert main(["models", "rollback", "--label", "canary", "--json"]) == 0
    assert main(["models", "promote", "--version", "9"]) == 1  # a failure, not a usage error
    assert "models.config" in {p.name for p in (tmp_path / "models").iterdir()}


def test_models_config_names_the_repository_as_tf_serving_mounts_it(repo: Path) -> None:
    reg = ModelRegistry(repo, "fraud_dnn", serving_base_path="/models/")
    _fake_version(reg, 1)
    reg.set_label("stable", 1)
    assert 'base_path: "/models/fraud_dnn"' in (repo / "models.config").read_text()
    local = ModelRegistry(repo, "fraud_dnn")
    local.set_label("stable", 1)
    assert f'base_path: "{(repo / "fraud_dnn").resolve()}"' in (repo / "models.config").read_text()
