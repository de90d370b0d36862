"""Toxiproxy (Shopify's TCP fault proxy) for the fault tests: its server on a free loopback port, and a small
typed client of its HTTP API.

The server binary is built once from the Go module proxy (``make toxiproxy``: Toxiproxy v2.12.0, installed
into Go's bin directory as ``server``, the way ``make helm`` installs helm). A proxy listens on a loopback port
and forwards to one upstream (Kafka, Redis, the model server); toxics added to it act on the traffic of every
connection, new and existing: latency with jitter, a bandwidth limit, a black hole (``timeout``), a TCP reset
(``reset_peer``). Disabling a proxy closes its connections and refuses new ones: a partition.

API reference: https://github.com/Shopify/toxiproxy#http-api (``/proxies``, ``/proxies/{name}/toxics``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fraudstream.stack import process
from fraudstream.stack.errors import StackError

TOXIPROXY_VERSION = "v2.12.0"
BINARY_NAME = "toxiproxy-server"
Stream = Literal["upstream", "downstream"]
"""``upstream``: client → server bytes; ``downstream``: server → client (replies)."""
ToxicType = Literal["latency", "bandwidth", "timeout", "reset_peer", "slow_close", "slicer", "limit_data"]


class ToxiproxyError(StackError):
    """The Toxiproxy server refused a request or cannot be reached."""


def go_bin_dir() -> Path:
    """Go's bin directory (``$GOBIN``, else ``$(go env GOPATH)/bin``), where ``make toxiproxy`` installs the
    server as ``server`` (the name ``go install …/cmd/server`` gives it), as ``make helm`` does for helm."""
    go = shutil.which("go")
    if go is not None:
        result = subprocess.run([go, "env", "GOBIN", "GOPATH"], capture_output=True, text=True, check=False)
        lines = result.stdout.splitlines() if result.returncode == 0 else []
        if lines and lines[0].strip():
            return Path(lines[0].strip())
        if len(lines) > 1 and lines[1].strip():
            return Path(lines[1].strip().split(":")[0]) / "bin"
    return Path.home() / "go" / "bin"


def _is_toxiproxy(binary: Path) -> bool:
    # "server" is a generic name: only a binary that calls itself toxiproxy-server is taken
    try:
        result = subprocess.run([str(binary), "-version"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return False
    return "toxiproxy-server" in result.stdout + result.stderr


def toxiproxy_binary() -> Path:
    """``toxiproxy-server`` on PATH, else the one ``make toxiproxy`` built into Go's bin directory."""
    on_path = shutil.which(BINARY_NAME)
    if on_path is not None:
        return Path(on_path)
    built = go_bin_dir() / "server"
    if built.is_file() and _is_toxiproxy(built):
        return built
    msg = (f"{BINARY_NAME} is missing: run 'make toxiproxy' (builds Toxiproxy {TOXIPROXY_VERSION} from the Go "
           f"module proxy into {built})")
    raise ToxiproxyError(msg)


@dataclass(frozen=True, slots=True)
class Toxic:
    """One toxic. ``toxicity`` is the share of connections it applies to (1.0 = all)."""

    name: str
    type: ToxicType
    stream: Stream = "downstream"
    toxicity: float = 1.0
    attributes: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def latency(cls, ms: int, *, jitter_ms: int = 0, stream: Stream = "downstream") -> Toxic:
        """Every chunk of data is delayed by ``ms`` ± ``jitter_ms``."""
        return cls(f"latency_{stream}", "latency", stream, attributes={"latency": ms, "jitter": jitter_ms})

    @classmethod
    def bandwidth(cls, kb_per_s: int, *, stream: Stream = "downstream") -> Toxic:
        return cls(f"bandwidth_{stream}", "bandwidth", stream, attributes={"rate": kb_per_s})

    @classmethod
    def black_hole(cls, *, close_after_ms: int = 0, stream: Stream = "downstream") -> Toxic:
        """Data is dropped; the connection stays open (``close_after_ms=0``) or closes after that long.
        Dropped bytes are gone: a connection that lived through it has lost part of its stream."""
        return cls(f"timeout_{stream}", "timeout", stream, attributes={"timeout": close_after_ms})

    @classmethod
    def reset_peer(cls, *, after_ms: int = 0, stream: Stream = "downstream") -> Toxic:
        """On the next data of a connection (which is dropped), wait ``after_ms``, then reset it (TCP RST)."""
        return cls(f"reset_peer_{stream}", "reset_peer", stream, attributes={"timeout": after_ms})

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "stream": self.stream, "toxicity": self.toxicity,
                "attributes": dict(self.attributes)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Toxic:
        return cls(str(raw["name"]), raw["type"], raw.get("stream", "downstream"), float(raw.get("toxicity", 1.0)),
                   {str(k): int(v) for k, v in (raw.get("attributes") or {}).items()})


@dataclass(frozen=True, slots=True)
class Proxy:
    name: str
    listen: str
    upstream: str
    enabled: bool

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Proxy:
        return cls(str(raw["name"]), str(raw["listen"]), str(raw["upstream"]), bool(raw["enabled"]))


class ToxiproxyClient:
    """The HTTP API of one Toxiproxy server (``http://127.0.0.1:<port>``). Calls are quick loopback
    requests; errors raise ``ToxiproxyError`` with the server's message."""

    def __init__(self, api: str, *, timeout_s: float = 5.0) -> None:
        self.api = api.rstrip("/")
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            msg = f"toxiproxy {method} {path}: HTTP {exc.code}: {detail}"
            raise ToxiproxyError(msg) from exc
        except OSError as exc:
            msg = f"toxiproxy {method} {path}: {exc}"
            raise ToxiproxyError(msg) from exc
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text  # /version answers plain text in some builds

    def version(self) -> str:
        answer = self._request("GET", "/version")
        return str(answer.get("version") if isinstance(answer, dict) else answer)

    def proxies(self) -> dict[str, Proxy]:
        return {name: Proxy.from_json(raw) for name, raw in self._request("GET", "/proxies").items()}

    def create_proxy(self, name: str, *, listen: str, upstream: str, enabled: bool = True) -> Proxy:
        raw = self._request("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream,
                                                 "enabled": enabled})
        return Proxy.from_json(raw)

    def proxy(self, name: str) -> Proxy:
        return Proxy.from_json(self._request("GET", f"/proxies/{name}"))

    def set_enabled(self, name: str, enabled: bool) -> Proxy:
        """``False`` closes every connection through the proxy and refuses new ones (a partition)."""
        return Proxy.from_json(self._request("POST", f"/proxies/{name}", {"enabled": enabled}))

    def delete_proxy(self, name: str) -> None:
        self._request("DELETE", f"/proxies/{name}")

    def toxics(self, proxy: str) -> list[Toxic]:
        return [Toxic.from_json(raw) for raw in self._request("GET", f"/proxies/{proxy}/toxics")]

    def add_toxic(self, proxy: str, toxic: Toxic) -> Toxic:
        return Toxic.from_json(self._request("POST", f"/proxies/{proxy}/toxics", toxic.as_json()))

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._request("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        self._request("POST", "/reset")

    @contextlib.contextmanager
    def toxic(self, proxy: str, toxic: Toxic) -> Iterator[Toxic]:
        """The toxic while the block runs; removed afterwards, also when the block fails."""
        added = self.add_toxic(proxy, toxic)
        try:
            yield added
        finally:
            self.remove_toxic(proxy, added.name)

    @contextlib.contextmanager
    def disabled(self, proxy: str) -> Iterator[None]:
        """A partition while the block runs; the proxy is enabled again afterwards."""
        self.set_enabled(proxy, False)
        try:
            yield
        finally:
            self.set_enabled(proxy, True)


class ToxiproxyServer:
    """A ``toxiproxy-server`` process on a free loopback port; its log in ``workdir``."""

    def __init__(self, workdir: Path, *, binary: Path | None = None) -> None:
        self.workdir = workdir
        self.binary = binary
        self.port: int | None = None
        self.pid: int | None = None

    @property
    def client(self) -> ToxiproxyClient:
        if self.port is None:
            msg = "toxiproxy is not started"
            raise ToxiproxyError(msg)
        return ToxiproxyClient(f"http://127.0.0.1:{self.port}")

    def start(self, *, timeout_s: float = 20.0) -> ToxiproxyClient:
        binary = self.binary or toxiproxy_binary()
        self.port = process.free_port()
        log = self.workdir / "toxiproxy.log"
        self.pid = process.spawn([str(binary), "-host", "127.0.0.1", "-port", str(self.port)], log_path=log)
        client = self.client
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.version()
                return client
            except ToxiproxyError:
                if not process.is_alive(self.pid):
                    msg = f"toxiproxy-server exited during start-up; see {log}"
                    raise ToxiproxyError(msg) from None
                if time.monotonic() > deadline:
                    self.stop()
                    msg = f"toxiproxy-server did not answer on port {self.port} within {timeout_s:.0f}s"
                    raise ToxiproxyError(msg) from None
                time.sleep(0.1)

    def stop(self) -> None:
        process.stop(self.pid, timeout_s=10)
        self.pid = None

    def __enter__(self) -> ToxiproxyClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
