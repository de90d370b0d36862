"""`fraudstream stack up --redis-cluster 3 --replicas 1` through the real CLI, in a private home: six
cluster-mode redis-servers joined into one healthy cluster, its settings in stack.env, `up` again reuses it,
`down` leaves no process behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from fraudstream.stack.process import is_alive
from tests.fixtures.stack import fraudstream

pytestmark = pytest.mark.integration


def test_stack_up_with_a_redis_cluster_and_down(tmp_path: Path) -> None:
    up = fraudstream(tmp_path, "stack", "up", "--redis-cluster", "3", "--replicas", "1")
    assert up.returncode == 0, up.stderr
    try:
        env = dict(line.split("=", 1) for line in (tmp_path / "stack.env").read_text().splitlines())
        assert env["FRAUD_REDIS_CLUSTER"] == "true" and env["FRAUD_REDIS_URL"].startswith("redis://127.0.0.1:")
        info = json.loads(fraudstream(tmp_path, "stack", "status", "--json").stdout.splitlines()[-1])
        assert info["redis"]["healthy"] and info["kafka"]["healthy"]
        assert info["redis"]["primaries"] == 3 and info["redis"]["replicas"] == 1
        pids: list[int] = info["redis"]["pid"]
        assert len(pids) == 6 and all(is_alive(p) for p in pids)

        client = RedisCluster.from_url(env["FRAUD_REDIS_URL"])
        try:
            nodes = client.get_nodes()
            assert sorted(n.server_type for n in nodes) == ["primary"] * 3 + ["replica"] * 3
            assert client.set("fs:{c:probe}:s", b"1") and client.get("fs:{c:probe}:s") == b"1"
        finally:
            client.close()

        again = fraudstream(tmp_path, "stack", "up", "--redis-cluster", "3", "--replicas", "1")
        assert again.returncode == 0, again.stderr
        info_again = json.loads(fraudstream(tmp_path, "stack", "status", "--json").stdout.splitlines()[-1])
        assert info_again["redis"]["pid"] == pids  # the running cluster is reused
    finally:
        down = fraudstream(tmp_path, "stack", "down")
    assert down.returncode == 0 and down.stdout.count("redis-cluster:") == 6, down.stdout
    assert [p for p in pids if is_alive(p)] == []
    assert not (tmp_path / "stack.env").exists()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(env["FRAUD_REDIS_URL"], socket_connect_timeout=1).ping()


def test_a_cluster_needs_three_primaries(tmp_path: Path) -> None:
    up = fraudstream(tmp_path, "stack", "up", "--redis-cluster", "2")
    assert up.returncode == 2 and "at least 3 primaries" in up.stderr
    assert not (tmp_path / "stack.env").exists()
