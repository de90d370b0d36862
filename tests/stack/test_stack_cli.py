"""`fraudstream stack up|status|down` through the real CLI, in a private home: real processes, no orphans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fraudstream.stack.process import is_alive
from tests.fixtures.stack import fraudstream

pytestmark = pytest.mark.integration


def descendants_alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if is_alive(pid)]


def test_stack_up_status_down_leaves_nothing_behind(tmp_path: Path) -> None:
    up = fraudstream(tmp_path, "stack", "up")
    assert up.returncode == 0, up.stderr
    env_file = (tmp_path / "stack.env").read_text()
    assert "FRAUD_KAFKA_BOOTSTRAP=127.0.0.1:" in env_file and "FRAUD_REDIS_URL=redis://127.0.0.1:" in env_file

    status = fraudstream(tmp_path, "stack", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    info = json.loads(status.stdout.strip().splitlines()[-1])
    assert info["kafka"]["healthy"] and info["redis"]["healthy"]
    pids = [info["kafka"]["pid"], info["redis"]["pid"]]
    assert all(is_alive(pid) for pid in pids)
    assert (tmp_path / "logs" / "kafka.log").exists() and (tmp_path / "logs" / "redis.log").exists()

    # `up` again reuses the running services.
    again = fraudstream(tmp_path, "stack", "up")
    assert again.returncode == 0
    status_again = json.loads(fraudstream(tmp_path, "stack", "status", "--json").stdout.splitlines()[-1])
    assert status_again["kafka"]["pid"] == pids[0]

    down = fraudstream(tmp_path, "stack", "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert descendants_alive(pids) == []
    assert not (tmp_path / "stack.env").exists()
    after = fraudstream(tmp_path, "stack", "status")
    assert after.returncode == 3 and "stopped" in after.stdout
