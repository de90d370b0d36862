"""Commands fail with a clear message and a non-zero exit, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudstream.cli import main
from fraudstream.stack.process import free_port


def test_replay_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--input", str(tmp_path / "missing.parquet"), "--mapping", "fdh"]) == 2
    assert "error: cannot read" in capsys.readouterr().err


def test_simulate_without_kafka(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FRAUD_HOME", str(tmp_path))
    monkeypatch.setenv("FRAUD_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")  # nothing listens there
    assert main(["simulate", "--count", "5"]) == 1
    assert "cannot reach Kafka" in capsys.readouterr().err
