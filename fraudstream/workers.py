"""Start real ``fraudstream worker`` processes (demo, benchmarks, tests) and wait until they are ready."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from config.settings import Topics
from fraudstream.stack.process import is_alive, stop

READY_MARKER = "worker ready"


@dataclass
class WorkerProcess:
    pid: int
    log: Path
    log_start: int = 0
    """Size of the (appended) log when this process started: only what follows is this process's."""

    def output(self) -> str:
        if not self.log.exists():
            return ""
        with self.log.open("rb") as handle:
            handle.seek(self.log_start)
            return handle.read().decode(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_ready(self, timeout_s: float = 120.0) -> bool:
        """Wait for the worker's ready line (clients and model checked, first partition assignment received);
        False if it died or timed out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if READY_MARKER in self.output():
                return True
            if not is_alive(self.pid):
                return False
            time.sleep(0.2)
        return False

    def alive(self) -> bool:
        return is_alive(self.pid)

    def stop(self, timeout_s: float = 20.0) -> None:
        stop(self.pid, timeout_s=timeout_s)


def worker_env(
    *, home: Path, bootstrap: str, redis_url: str, model_backend: str, topics: Topics | None = None, **extra: str
) -> dict[str, str]:
    """The ``FRAUD_*`` variables that point a worker at a stack, a model and (optionally) private topics."""
    env = {
        "FRAUD_HOME": str(home), "FRAUD_KAFKA_BOOTSTRAP": bootstrap, "FRAUD_REDIS_URL": redis_url,
        "FRAUD_MODEL_BACKEND": model_backend,
    }
    if topics is not None:
        env.update({f"FRAUD_TOPICS__{name.upper()}": topic for name, topic in topics.model_dump().items()})
    env.update(extra)
    return env


def spawn_worker(env_overrides: dict[str, str], log: Path, *, extra_args: tuple[str, ...] = ()) -> WorkerProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    start = log.stat().st_size if log.exists() else 0
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env_overrides}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fraudstream", "worker", *extra_args], env=env, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    return WorkerProcess(proc.pid, log, start)
