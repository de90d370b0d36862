"""Commands fail with one clear line and the right exit code, not a traceback: 2 for usage errors (argparse),
1 for failures (the stack is down, a port is taken, no model yet), the traceback only with ``--debug``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fraudstream.cli import main
from fraudstream.stack.process import free_port

STACK_HINT = "— is the stack up? run: fraudstream stack up"


def run(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    variables = {**os.environ, "FRAUD_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    return subprocess.run([sys.executable, "-m", "fraudstream", *args], env=variables, capture_output=True,
                          text=True, timeout=180, check=False, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def nothing_listens() -> dict[str, str]:
    """A bootstrap and a Redis URL where nothing listens: the stack is down."""
    return {"FRAUD_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "FRAUD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}


@pytest.fixture
def fixes_file(tmp_path: Path) -> Path:
    path = tmp_path / "fixes.jsonl"
    path.write_text('{"transaction_id": "t1", "card_id": "c1", "terminal_id": "x", "amount": 5.0, '
                    '"event_time": "2024-01-01T00:00:00Z"}\n')
    return path


# --- the stack is down: one line naming the service, its address and the fix -----------------------------
DOWN = [
    (["worker"], "Kafka"),
    (["simulate", "--count", "5"], "Kafka"),
    (["tail", "scored-transactions"], "Kafka"),
    (["dlq"], "Kafka"),
    (["dlq", "export", "--reason", "decode:json", "out.jsonl"], "Kafka"),
    (["dlq", "resubmit", "FIXES"], "Kafka"),
    (["dashboard", "--port", "0"], "Kafka"),
    (["monitor", "--metrics-port", "0"], "Kafka"),
    (["features", "rebuild"], "Kafka"),
    (["features", "parity", "--input", "FIXES"], "Redis"),
    (["trainer", "serve"], "Kafka"),
    (["retrain", "--publish", "--input", "FIXES"], "Kafka"),
    (["train", "--input", "KAFKA_URI"], "Kafka"),
    (["evaluate", "--input", "FIXES", "--via", "stream"], "Kafka"),
]


@pytest.mark.parametrize(("args", "service"), DOWN, ids=[" ".join(a[:3]) for a, _ in DOWN])
def test_a_command_that_needs_the_stack_says_so_in_one_line(args: list[str], service: str, tmp_path: Path,
                                                             nothing_listens: dict[str, str], fixes_file: Path
                                                             ) -> None:
    uri = "kafka://" + nothing_listens["FRAUD_KAFKA_BOOTSTRAP"]
    argv = [str(fixes_file) if a == "FIXES" else uri if a == "KAFKA_URI" else a for a in args]
    result = run(argv, tmp_path, **nothing_listens)
    address = nothing_listens["FRAUD_KAFKA_BOOTSTRAP"] if service == "Kafka" else \
        nothing_listens["FRAUD_REDIS_URL"].removeprefix("redis://").removesuffix("/0")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: cannot reach {service} at {address} {STACK_HINT}"], \
        result.stderr
    assert not result.stdout.strip()


def test_debug_shows_the_traceback(tmp_path: Path, nothing_listens: dict[str, str]) -> None:
    result = run(["tail", "scored-transactions", "--debug"], tmp_path, **nothing_listens)
    assert result.returncode == 1 and "Traceback (most recent call last)" in result.stderr
    assert "ServiceUnreachable: cannot reach Kafka" in result.stderr
    assert run(["--debug", "dlq"], tmp_path, **nothing_listens).stderr.count("Traceback") >= 1


# --- usage errors: argparse rejects them before anything runs (exit 2) -----------------------------------
USAGE = [
    ["simulate", "--count", "-5"],
    ["simulate", "--count", "0"],
    ["simulate", "--rate", "0"],
    ["simulate", "--rate", "-3.5"],
    ["simulate", "--invalid-share", "1.5"],
    ["simulate", "--label-delay-hours", "-1"],
    ["replay", "--input", "MISSING"],
    ["replay", "--input", "EXISTING", "--rate", "-1"],
    ["replay", "--input", "EXISTING", "--mapping", "other"],
    ["dashboard", "--port", "99999"],
    ["dashboard", "--windows", "5m=-1"],
    ["dashboard", "--psi-threshold", "nan"],
    ["monitor", "--metrics-port", "-1"],
    ["tail", "transactions", "--max", "0"],
    ["dlq", "show", "--max", "-1"],
    ["dlq", "resubmit", "MISSING"],
    ["train", "--input", "MISSING"],
    ["train", "--epochs", "0"],
    ["evaluate", "--limit", "-10"],
    ["features", "parity", "--input", "MISSING"],
    ["features", "rebuild", "--batch-size", "0"],
    ["bench", "e2e", "--transactions", "-1"],
    ["demo", "--transactions", "0"],
    ["demo", "--invalid-share", "-0.1"],
    ["stack", "up", "--timeout", "-5"],
    ["trainer", "serve", "--port", "70000"],
    ["worker", "--batch-size", "-1"],
]


@pytest.mark.parametrize("args", USAGE, ids=[" ".join(a) for a in USAGE])
def test_bad_arguments_are_usage_errors(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    existing = tmp_path / "history.parquet"
    existing.write_bytes(b"PAR1")
    argv = [str(tmp_path / "missing") if a == "MISSING" else str(existing) if a == "EXISTING" else a for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err, err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["--help"], ["dlq", "--help"], ["tail", "--help"], ["schemas", "export", "--help"]):
        assert main(command) == 0
    out = capsys.readouterr().out
    assert "resubmit" in out and "--from-beginning" in out and "$schema" in out


def test_replay_of_a_file_that_is_not_fdh_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "not.parquet"
    bad.write_text("hello")
    assert main(["replay", "--input", str(bad), "--mapping", "fdh"]) == 2
    assert "error: cannot read" in capsys.readouterr().err


def test_schemas_export_to_a_file_path_is_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["schemas", "export", str(blocker / "sub")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_an_invalid_setting_is_named_with_where_to_fix_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FRAUD_HOME", str(tmp_path))
    monkeypatch.setenv("FRAUD_BATCH_MAX_SIZE", "0")
    assert main(["worker"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: invalid setting batch_max_size: ") and "FRAUD_BATCH_MAX_SIZE" in err, err
    assert len(err.splitlines()) == 1


# --- the stack is up ----------------------------------------------------------------------------------
@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.integration
def test_dashboard_on_a_port_in_use(tmp_path: Path, kafka_bootstrap: str, redis_url: str, busy_port: int) -> None:
    result = run(["dashboard", "--port", str(busy_port), "--no-feature-sketch"], tmp_path,
                 FRAUD_KAFKA_BOOTSTRAP=kafka_bootstrap, FRAUD_REDIS_URL=redis_url)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the address is already in use") and "--port" in last, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_monitor_on_a_port_in_use(tmp_path: Path, kafka_bootstrap: str, redis_url: str, busy_port: int) -> None:
    result = run(["monitor", "--metrics-port", str(busy_port), "--no-feature-sketch"], tmp_path,
                 FRAUD_KAFKA_BOOTSTRAP=kafka_bootstrap, FRAUD_REDIS_URL=redis_url)
    assert result.returncode == 1 and "already in use" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.integration
def test_worker_without_a_model(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    result = run(["worker"], tmp_path, FRAUD_KAFKA_BOOTSTRAP=kafka_bootstrap, FRAUD_REDIS_URL=redis_url)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: no model version in {(tmp_path / 'models' / 'fraud_dnn').resolve()} — train one first: "
        "fraudstream train --quick (or point FRAUD_MODEL_BACKEND at a model repository)"], result.stderr


@pytest.mark.integration
def test_tail_of_a_topic_that_does_not_exist(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    result = run(["tail", "no-such-topic"], tmp_path, FRAUD_KAFKA_BOOTSTRAP=kafka_bootstrap,
                 FRAUD_REDIS_URL=redis_url)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: topic 'no-such-topic' does not exist (topics: ") and "transactions" in last
