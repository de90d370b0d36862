"""Parsing of ``model_backend`` URIs into a typed spec.

``local:///abs/path/to/repo/fraud_dnn`` — the model directory of a local model repository.
``tfserving://host:8500/fraud_dnn?label=stable&signature=serving_default&deadline_ms=500`` — TF Serving over
gRPC; ``version=N`` pins a version instead of a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from scoring.errors import BadBackendUri

BackendKind = Literal["local", "tfserving"]
_TFSERVING_PARAMS = frozenset({"label", "version", "signature", "deadline_ms"})


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendSpec:
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
