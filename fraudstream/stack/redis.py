"""A local ``redis-server`` (Debian package) with append-only persistence, as docker-compose runs it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr

from config.redis import RedisConnection
from fraudstream.stack import process
from fraudstream.stack.errors import StackError


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        msg = (
            "redis-server is not installed. As root: apt-get install -y redis-server "
            "(or run 'make setup' as root / with sudo); then try again."
        )
        raise StackError(msg)
    return binary


AOF_REWRITE_MIN_SIZE = "2gb"
"""Every feature call rewrites its entity's state blob, so the AOF grows by ~2.8 KB per transaction: with
Redis's default (64 MB) it was rewritten every few seconds under load, and each rewrite forks and writes
out the whole dataset on the pipeline's two cores. Measured at 5,000 tx/s offered (six alternating
pairs): p99 103-232 ms with 2-3 rewrites in the 13 s, 76-167 ms with none."""


def redis_command(port: int, data_dir: Path, log_file: Path, *, appendonly: bool = True) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
        "--dir", str(data_dir), "--appendonly", "yes" if appendonly else "no", "--appendfsync", "everysec",
        "--auto-aof-rewrite-min-size", AOF_REWRITE_MIN_SIZE,
        "--save", "", "--daemonize", "no", "--logfile", str(log_file), "--maxmemory-policy", "noeviction",
    ]


def healthy(url: str, **client_options: Any) -> bool:
    """``client_options``: what else the client needs to get a PONG (username, password, TLS CA)."""
    username = client_options.pop("username", None)
    password = client_options.pop("password", None)
    connection = RedisConnection(url=url, username=username, password=SecretStr(password) if password else None)
    client = connection.sync_client(socket_connect_timeout=1, socket_timeout=1, **client_options)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def wait_healthy(
    url: str, *, timeout_s: float, alive: Callable[[], bool] | None = None, **client_options: Any
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if healthy(url, **client_options):
            return
        if alive is not None and not alive():
            msg = "redis-server exited during start-up; see its log under .fraudstream/logs/"
            raise StackError(msg)
        time.sleep(0.1)
    msg = f"Redis at {url} did not answer PING within {timeout_s:.0f}s"
    raise StackError(msg)


def purge_prefix(redis_at: RedisConnection | str, prefix: str) -> int:
    """Delete every key under ``prefix:`` (a benchmark's or an evaluation's private keyspace)."""
    connection = redis_at if isinstance(redis_at, RedisConnection) else RedisConnection(url=redis_at)
    client = connection.sync_client()
    deleted = 0
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for i in range(0, len(keys), 5000):
            deleted += int(client.delete(*keys[i : i + 5000]))
    finally:
        client.close()
    return deleted


@contextmanager
def scratch_redis(
    workdir: Path, *, timeout_s: float = 10.0, server_args: Sequence[str] = (), tls: bool = False,
    **client_options: Any,
) -> Iterator[str]:
    """The URL of a redis-server of its own on a free port, without persistence, for tests and
    benchmarks that must not share the stack's keyspace; stopped on exit.

    ``server_args`` are added to the command line (an ACL file, TLS certificates); with ``tls`` the port
    speaks TLS only and the URL is ``rediss://``. ``client_options`` are what the start-up PING needs
    (username, password, ``ssl_ca_certs``); the URL carries none of them."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = process.free_port()
    command = redis_command(port, workdir, workdir / "redis.log", appendonly=False) + list(server_args)
    if tls:
        command += ["--port", "0", "--tls-port", str(port)]  # the last --port wins: no plain-text port
    pid = process.spawn(command, log_path=workdir / "redis.stdout.log")
    url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{port}/0"
    try:
        wait_healthy(url, timeout_s=timeout_s, alive=lambda: process.is_alive(pid), **client_options)
        yield url
    finally:
        process.stop(pid, timeout_s=timeout_s)
