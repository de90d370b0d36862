"""The one place that builds the model server's gRPC channel (``settings.model``): where the model is, its
deadline, and the retry policy gRPC applies on that channel.

``ModelConnection`` is the model part of the settings. Its ``backend`` is the ``model_backend`` URI:

``local:///abs/path/to/repo/fraud_dnn`` — the model directory of a local model repository (no connection:
the worker loads the SavedModel itself).
``tfserving://host:8500/fraud_dnn?label=stable&signature=serving_default&deadline_ms=500`` — TF Serving over
gRPC; ``version=N`` pins a version instead of a label; ``deadline_ms`` overrides ``deadline_s``.

Retryable status codes are retried a few times with jittered exponential backoff by gRPC itself (the
channel's service config: ``GrpcRetryPolicy.service_config``); the deadline covers a call with its retries.
Longer outages are the resilience layer's job (scoring/resilience.py), for up to ``outage_grace_s``.

grpc is imported inside the factory: settings-only commands do not load it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

from config.errors import BadBackendUri

if TYPE_CHECKING:
    import grpc.aio

BackendKind = Literal["local", "tfserving"]
_TFSERVING_PARAMS = frozenset({"label", "version", "signature", "deadline_ms"})
RETRYABLE_CODE_NAMES = ("ABORTED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNAVAILABLE")
"""The gRPC status codes that say the same call can succeed later (scoring/tfserving.py maps them to
``BackendUnavailable``); gRPC retries them on the channel."""
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
RETRY_BUFFER_BYTES = 16 * 1024 * 1024
"""gRPC keeps a request for its retries only up to this size: with its default (256 KiB) a 6,000-row batch
(384 KB) failed at the first UNAVAILABLE instead of being retried."""
MIN_BACKOFF_S = 0.01
"""gRPC 1.85's retries stalled until the deadline on 20-29 of 40 calls with an initialBackoff of 1 ms, and on
none of 40 with 2, 3, 5 or 10 ms (a sync and an aio server answering UNAVAILABLE twice)."""
TFSERVING_SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendSpec:
    """A parsed ``model_backend`` URI."""

    kind: BackendKind
    model_name: str
    path: Path | None = None
    """Model directory (``<repo>/<model_name>``), local backend only."""
    target: str | None = None
    """``host:port`` of the gRPC server, TF Serving only."""
    label: str | None = None
    version: int | None = None
    signature: str = "serving_default"
    deadline_s: float | None = None


def parse_backend_uri(uri: str) -> BackendSpec:
    parts = urlsplit(uri)
    if parts.scheme == "local":
        if parts.netloc or not parts.path.startswith("/"):
            msg = f"local backend URI {uri!r} must be local:///absolute/path/to/repo/<model_name>"
            raise BadBackendUri(msg)
        path = Path(parts.path)
        return BackendSpec(kind="local", model_name=path.name, path=path)
    if parts.scheme == "tfserving":
        return _parse_tfserving(uri, parts.netloc, parts.path, parts.query)
    msg = f"unknown model backend scheme in {uri!r}; use local:///path or tfserving://host:port/model"
    raise BadBackendUri(msg)


def _parse_tfserving(uri: str, netloc: str, path: str, query: str) -> BackendSpec:
    name = path.strip("/")
    if not netloc or not name or "/" in name:
        msg = f"TF Serving URI {uri!r} must look like tfserving://host:8500/<model_name>?label=stable"
        raise BadBackendUri(msg)
    params = {key: values[-1] for key, values in parse_qs(query, strict_parsing=False).items()}
    unknown = set(params) - _TFSERVING_PARAMS
    if unknown:
        msg = f"unknown parameter(s) {sorted(unknown)} in {uri!r}; known: {sorted(_TFSERVING_PARAMS)}"
        raise BadBackendUri(msg)
    if "label" in params and "version" in params:
        msg = f"{uri!r} sets both label and version; choose one"
        raise BadBackendUri(msg)
    try:
        version = int(params["version"]) if "version" in params else None
        deadline_s = float(params["deadline_ms"]) / 1000.0 if "deadline_ms" in params else None
    except ValueError as exc:
        msg = f"bad number in {uri!r}: {exc}"
        raise BadBackendUri(msg) from exc
    target = netloc if ":" in netloc else f"{netloc}:8500"
    return BackendSpec(
        kind="tfserving",
        model_name=name,
        target=target,
        label=params.get("label"),
        version=version,
        signature=params.get("signature", "serving_default"),
        deadline_s=deadline_s,
    )


@dataclass(frozen=True)
class GrpcRetryPolicy:
    """gRPC's own retry policy for both TF Serving services: up to ``retries`` more attempts on the retryable
    codes, the n-th after a random wait in [0, ``backoff_s`` * 2^(n-1)) (full jitter: the retries of many
    workers do not reach the server in lockstep). gRPC retries only statuses the server sent: a call whose
    own deadline ran out is not retried."""

    retries: int = 2
    backoff_s: float = 0.05

    def service_config(self) -> str:
        """The channel's ``grpc.service_config`` (JSON)."""
        if self.retries <= 0:
            return json.dumps({})
        policy = {
            "maxAttempts": min(self.retries + 1, 5),  # gRPC caps attempts at 5
            "initialBackoff": f"{max(self.backoff_s, MIN_BACKOFF_S):.3f}s",
            "maxBackoff": f"{max(self.backoff_s * 2 ** (self.retries - 1), MIN_BACKOFF_S):.3f}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": sorted(RETRYABLE_CODE_NAMES),
        }
        services = [{"service": name} for name in TFSERVING_SERVICES]
        return json.dumps({"methodConfig": [{"name": services, "retryPolicy": policy}]})


@dataclass(frozen=True)
class ModelConnection:
    """Where the model is and how to call it; the factory of the model server's gRPC channel."""

    backend: str
    """The ``model_backend`` URI (``local://…`` or ``tfserving://…``)."""
    deadline_s: float = 1.0
    """Each model call's deadline, retries included, unless the URI sets ``deadline_ms``."""
    outage_grace_s: float = 30.0
    """How long an unreachable model is retried before the worker scores with rules only."""
    retry: GrpcRetryPolicy = field(default_factory=GrpcRetryPolicy)

    @classmethod
    def tfserving(
        cls, target: str, model_name: str, *, label: str | None = None, version: int | None = None,
        signature: str = "serving_default", deadline_s: float = 1.0, retry: GrpcRetryPolicy | None = None,
    ) -> ModelConnection:
        """The connection to ``model_name`` on the TF Serving at ``target`` (a benchmark's or a test's own
        server): the same ``tfserving://`` URI the settings would carry."""
        params = {"label": label, "version": version,
                  "signature": None if signature == "serving_default" else signature}
        query = urlencode({key: value for key, value in params.items() if value is not None})
        return cls(backend=f"tfserving://{target}/{model_name}" + (f"?{query}" if query else ""),
                   deadline_s=deadline_s, retry=retry or GrpcRetryPolicy())

    @cached_property
    def spec(self) -> BackendSpec:
        """The parsed URI; raises ``BadBackendUri``."""
        return parse_backend_uri(self.backend)

    @property
    def kind(self) -> BackendKind:
        return self.spec.kind

    @property
    def model_name(self) -> str:
        return self.spec.model_name

    @property
    def label(self) -> str | None:
        return self.spec.label

    @property
    def target(self) -> str:
        """``host:port`` of the model server (TF Serving only)."""
        if self.spec.target is None:
            msg = f"{self.backend!r} names a local model directory, not a model server"
            raise BadBackendUri(msg)
        return self.spec.target

    @property
    def call_deadline_s(self) -> float:
        """The deadline of one call: the URI's ``deadline_ms`` if given, else ``deadline_s``."""
        return self.spec.deadline_s or self.deadline_s

    def channel_options(self) -> list[tuple[str, int | str]]:
        return [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", 1),
            ("grpc.per_rpc_retry_buffer_size", RETRY_BUFFER_BYTES),
            ("grpc.service_config", self.retry.service_config()),
        ]

    def channel(self) -> grpc.aio.Channel:
        """A ``grpc.aio`` channel to the model server, with the retry policy and message limits. Plaintext:
        TF Serving is reached on the cluster's internal network (no TLS setting exists yet; one would be
        read here)."""
        import grpc.aio

        return grpc.aio.insecure_channel(self.target, options=self.channel_options())
