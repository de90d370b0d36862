"""TensorFlow Serving backend: ``PredictionService.Predict`` over a ``grpc.aio`` channel.

Start-up checks, in order: ``GetModelStatus`` (a version is AVAILABLE), ``GetModelMetadata`` (the
signature exists with input ``features``), then a ``Predict`` on the ``metadata`` signature whose
``feature_list_hash`` must equal the worker's (else ``FeatureHashMismatch``: the worker refuses to start).
A version first seen at runtime (a new stable, the canary) is verified the same way before its scores are
returned.

The channel, its retry policy and the deadline are the model connection's (``settings.model``,
config/model.py): retryable status codes are retried a few times by gRPC itself, behind a circuit breaker
here; the deadline covers the call with its retries. Longer outages are the resilience layer's job
(scoring/resilience.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from config.model import RETRYABLE_CODE_NAMES, ModelConnection
from scoring.backend import Prediction
from scoring.breaker import CircuitBreaker
from scoring.errors import (
    BackendUnavailable,
    FeatureHashMismatch,
    InvalidRequest,
    LabelNotFound,
    ModelNotFound,
    ScoringError,
)
from scoring.tensors import float_tensor, to_float_array, to_strings

log = logging.getLogger(__name__)

RETRYABLE_CODES = frozenset(grpc.StatusCode[name] for name in RETRYABLE_CODE_NAMES)
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE


def translate(exc: grpc.aio.AioRpcError, what: str) -> ScoringError:
    """Map a gRPC status to the scoring exception that says whether to retry."""
    code, details = exc.code(), exc.details() or ""
    text = f"{what}: {code.name} {details}"
    if code in RETRYABLE_CODES:
        return BackendUnavailable(text)
    if "version label" in details.lower():
        return LabelNotFound(text)
    if code == grpc.StatusCode.NOT_FOUND:
        return ModelNotFound(text)
    return InvalidRequest(text)


class TFServingBackend:
    """``ModelBackend`` over TF Serving's gRPC API."""

    def __init__(
        self,
        connection: ModelConnection,
        *,
        expected_feature_hash: str | None,
        breaker: CircuitBreaker | None = None,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        """``connection`` names the server, model, label or version and signature (its ``tfserving://`` URI),
        the deadline and the retry policy, and builds the channel unless one is given."""
        self.connection = connection
        spec = connection.spec
        self.target = connection.target
        self.model_name = spec.model_name
        self.expected_feature_hash = expected_feature_hash
        self.feature_list_hash: str | None = expected_feature_hash
        self.default_label = spec.label if spec.version is None else None
        self.version = spec.version
        self.signature = spec.signature
        self.deadline_s = connection.call_deadline_s
        self.breaker = breaker or CircuitBreaker(name=f"tfserving:{self.target}/{self.model_name}")
        self._channel = channel
        self._own_channel = channel is None
        self._predict_stub: Any = None
        self._model_stub: Any = None
        self._verified: dict[int, str | None] = {}
        self._refused: dict[int, str | None] = {}
        self.n_features: int | None = None

    # --- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._channel is None:
            self._channel = self.connection.channel()
        self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        await self._check_status()
        version = await self._check_signature()
        await self._verify_version(version)

    async def close(self) -> None:
        if self._channel is not None and self._own_channel:
            await self._channel.close()
        self._channel = None

    # --- scoring -------------------------------------------------------------------------------------
    async def predict(self, features: npt.NDArray[np.float32], *, label: str | None = None) -> Prediction:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or (self.n_features is not None and features.shape[1] != self.n_features):
            msg = f"features must have shape (n, {self.n_features or 'F'}), got {features.shape}"
            raise InvalidRequest(msg)
        wanted = label or self.default_label
        if features.shape[0] == 0:  # nothing to ask; a batching server may reject an empty batch
            empty = np.zeros((0, features.shape[1]), np.float32)
            return Prediction(np.zeros(0, np.float32), empty, self.model_name, None, wanted)
        request = predict_pb2.PredictRequest(model_spec=self._spec(wanted, self.signature))
        request.inputs["features"].CopyFrom(float_tensor(features))
        response = await self._call(self._predict_stub.Predict, request, "Predict")
        version = int(response.model_spec.version.value) if response.model_spec.HasField("version") else None
        if version is not None and version not in self._verified:
            await self._verify_version(version)
        scores = to_float_array(response.outputs["score"]).reshape(-1)
        contributions = (
            to_float_array(response.outputs["contributions"]) if "contributions" in response.outputs else None
        )
        if scores.shape[0] != features.shape[0]:
            msg = f"server returned {scores.shape[0]} scores for {features.shape[0]} rows"
            raise InvalidRequest(msg)
        return Prediction(scores, contributions, self.model_name, version, wanted)

    # --- internals -----------------------------------------------------------------------------------
    def _spec(self, label: str | None, signature: str, version: int | None = None) -> Any:
        spec = model_pb2.ModelSpec(name=self.model_name, signature_name=signature)
        pinned = version if version is not None else (self.version if label is None else None)
        if pinned is not None:
            spec.version.value = pinned
        elif label is not None:
            spec.version_label = label
        return spec

    async def _call(self, method: Any, request: Any, what: str) -> Any:
        """One RPC (gRPC retries retryable codes itself: ``GrpcRetryPolicy``) with deadline and breaker."""
        self.breaker.before_call()
        try:
            response = await method(request, timeout=self.deadline_s)
        except asyncio.CancelledError:
            # A cancelled half-open probe must not leave the breaker waiting for it forever.
            self.breaker.release_probe()
            raise
        except grpc.aio.AioRpcError as exc:
            error = translate(exc, f"{what} {self.model_name}@{self.target}")
            if error.retryable:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()  # the server answered: it is up
            raise error from exc
        self.breaker.record_success()
        return response

    async def _check_status(self) -> None:
        spec = model_pb2.ModelSpec(name=self.model_name)
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        if self.version is not None:
            request.model_spec.version.value = self.version
        response = await self._call(self._model_stub.GetModelStatus, request, "GetModelStatus")
        available = [s.version for s in response.model_version_status if s.state == _AVAILABLE]
        if not available:
            states = [(s.version, s.state) for s in response.model_version_status]
            msg = f"model {self.model_name} at {self.target} has no AVAILABLE version (states: {states})"
            raise ModelNotFound(msg)

    async def _check_signature(self) -> int:
        """Check the serving signature of the configured label/version; returns that version."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._spec(self.default_label, self.signature), metadata_field=["signature_def"]
        )
        response = await self._call(self._predict_stub.GetModelMetadata, request, "GetModelMetadata")
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        if self.signature not in sig_map.signature_def:
            have = sorted(sig_map.signature_def)
            msg = f"model {self.model_name} has no signature {self.signature!r} (has {have})"
            raise InvalidRequest(msg)
        signature = sig_map.signature_def[self.signature]
        if "features" not in signature.inputs or "score" not in signature.outputs:
            msg = f"signature {self.signature!r} must take 'features' and return 'score'"
            raise InvalidRequest(msg)
        dims = signature.inputs["features"].tensor_shape.dim
        if len(dims) == 2 and dims[1].size > 0:
            self.n_features = int(dims[1].size)
        return int(response.model_spec.version.value)

    async def _verify_version(self, version: int) -> None:
        """Read the version's ``metadata`` signature and compare its feature-list hash."""
        if version in self._refused:  # known incompatible: no metadata round trip per batch
            raise self._mismatch(version, self._refused[version])
        request = predict_pb2.PredictRequest(model_spec=self._spec(None, "metadata", version))
        response = await self._call(self._predict_stub.Predict, request, "Predict(metadata)")
        outputs = response.outputs
        hashes = to_strings(outputs["feature_list_hash"]) if "feature_list_hash" in outputs else []
        model_hash = hashes[0] if hashes else None
        if self.expected_feature_hash is not None and model_hash != self.expected_feature_hash:
            self._refused[version] = model_hash
            raise self._mismatch(version, model_hash)
        if self.feature_list_hash is None:
            self.feature_list_hash = model_hash
        self._verified[version] = model_hash
        log.info("model %s v%d verified (feature list %s)", self.model_name, version, model_hash)

    def _mismatch(self, version: int, model_hash: str | None) -> FeatureHashMismatch:
        return FeatureHashMismatch(
            model=f"{self.model_name} v{version} at {self.target}",
            model_hash=model_hash,
            expected_hash=self.expected_feature_hash or "",
        )
