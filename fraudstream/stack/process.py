"""Start, watch and stop a local service process without leaving orphans."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from fraudstream.stack.errors import StackError

# Listening ports are picked below the kernel's ephemeral range: a port from inside it, free when picked,
# can be taken as the local end of an outgoing connection (a broker dialling its voters, a client) before
# the service binds it seconds later; a three-broker start-up failed that way.
LISTEN_PORT_MIN = 20_000


def ephemeral_port_floor() -> int:
    """The lowest port the kernel hands to outgoing connections (32768 when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port() -> int:
    """A loopback port that was free a moment ago, below the ephemeral range when there is room."""
    ceiling = ephemeral_port_floor()
    for _ in range(100 if ceiling - 1 > LISTEN_PORT_MIN else 0):
        port = random.randint(LISTEN_PORT_MIN, ceiling - 1)
        if port_is_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def spawn(argv: Sequence[str], *, log_path: Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in its own session (so a stop can signal its whole process group); output to a log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            proc = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=cwd, env=env, start_new_session=True,
            )
        except FileNotFoundError as exc:
            msg = f"cannot start {argv[0]!r}: not found on PATH"
            raise StackError(msg) from exc
    return proc.pid


def is_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process counts as dead.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return _not_zombie(pid)
    return waited == 0


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop(pid: int | None, *, timeout_s: float = 30.0) -> bool:
    """SIGTERM the process group, then SIGKILL what is still there after ``timeout_s``. True if it ran."""
    if not is_alive(pid):
        return False
    assert pid is not None
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(pid):
            break
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)  # also reaps any child the service left behind
    deadline = time.monotonic() + 5
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def stop_all(pids: Sequence[int | None], *, timeout_s: float = 30.0) -> list[int]:
    """``stop`` for several processes at once: SIGTERM to all, then wait for all. The nodes of one cluster
    stop together: one at a time, the last ones wait for a controller quorum that has already left (a
    three-broker Kafka took 52 s to stop in sequence, the two last ones until the SIGKILL). Returns the pids
    that ran."""
    running = [pid for pid in pids if pid is not None and is_alive(pid)]
    for pid in running:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(is_alive(pid) for pid in running):
        time.sleep(0.1)
    for pid in running:
        stop(pid, timeout_s=0)  # SIGKILLs and reaps what is still there
    return running


def kill(pid: int) -> None:
    """SIGKILL the process group at once (a crash, for fault tests: no graceful shutdown) and reap it."""
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
