"""An in-process TF Serving stand-in: ``PredictionService.Predict`` and ``ModelService.GetModelStatus`` /
``GetModelMetadata`` on a ``grpc.aio`` server, backed by real SavedModels loaded with
``tf.saved_model.load`` from a model directory in TF Serving layout (versions + ``labels.json``).

Fault injection for tests and benchmarks: ``latency_s`` (added to every call), ``fail_with(code, times)``
(the next ``times`` calls fail with ``code``; ``times=None`` until ``heal()``), and ``reload()`` to pick up
new versions / label changes the way TF Serving's file-system poller does.

Error codes and messages follow TF Serving: an unknown model → NOT_FOUND, an unknown version label →
INVALID_ARGUMENT "Unrecognized servable version label".
"""

from __future__ import annotations

import asyncio
import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)

from scoring import repository
from scoring.tensors import float_tensor, to_float_array


class _Servable:
    def __init__(self, version_dir: Path) -> None:
        self.version = int(version_dir.name)
        self.handle = tf.saved_model.load(str(version_dir))
        graph = saved_model_pb2.SavedModel()
        graph.ParseFromString((version_dir / "saved_model.pb").read_bytes())
        self.signature_defs = graph.meta_graphs[0].signature_def


class InProcessModelServer:
    """Serves the versions of ``model_dir`` (model name = its directory name) on a loopback port."""

    def __init__(self, model_dir: Path, *, host: str = "127.0.0.1", port: int = 0, threads: int = 1) -> None:
        self.model_dir = model_dir
        self.model_name = model_dir.name
        self.host = host
        self.port = port
        self.latency_s = 0.0
        self.calls = itertools.count()
        self.predict_calls = 0
        self._fail_code: grpc.StatusCode | None = None
        self._fail_left: int | None = None
        self._servables: dict[int, _Servable] = {}
        self._labels: dict[str, int] = {}
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="servicer")
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    # --- control ---------------------------------------------------------------------------------
    def reload(self) -> None:
        """Load new versions and labels now (TF Serving would notice them at its next poll)."""
        state = repository.scan(self.model_dir)
        for version in state.versions:
            if version not in self._servables:
                self._servables[version] = _Servable(self.model_dir / str(version))
        for version in list(self._servables):
            if version not in state.versions:
                del self._servables[version]
        self._labels = dict(state.labels)

    def fail_with(self, code: grpc.StatusCode, times: int | None = None) -> None:
        self._fail_code, self._fail_left = code, times

    def heal(self) -> None:
        self._fail_code, self._fail_left = None, None
        self.latency_s = 0.0

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.reload)
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 64 << 20),
            ]
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(self), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), server)
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        self._executor.shutdown(wait=True)

    # --- shared by the services ------------------------------------------------------------------
    async def admit(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        next(self.calls)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self._fail_code is not None:
            if self._fail_left is not None:
                self._fail_left -= 1
                if self._fail_left <= 0:
                    code, self._fail_code, self._fail_left = self._fail_code, None, None
                    await context.abort(code, "injected fault")
            await context.abort(self._fail_code, "injected fault")

    async def servable(self, spec: Any, context: grpc.aio.ServicerContext[Any, Any]) -> _Servable:
        if spec.name != self.model_name:
            msg = f"Servable not found for request: Latest({spec.name})"
            await context.abort(grpc.StatusCode.NOT_FOUND, msg)
        if spec.HasField("version"):
            version = int(spec.version.value)
        elif spec.version_label:
            if spec.version_label not in self._labels:
                msg = f"Unrecognized servable version label: {spec.version_label}"
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, msg)
            version = self._labels[spec.version_label]
        elif self._servables:
            version = max(self._servables)
        else:
            version = -1
        if version not in self._servables:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({spec.name}, {version})"
            )
        return self._servables[version]

    async def run(self, servable: _Servable, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        fn = servable.handle.signatures[signature]

        def call() -> dict[str, np.ndarray]:
            out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
            return {k: np.asarray(v.numpy()) for k, v in out.items()}

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, server: InProcessModelServer) -> None:
        self.server = server

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.server.predict_calls += 1  # counted before faults: tests count attempts, failed ones too
        await self.server.admit(context)
        servable = await self.server.servable(request.model_spec, context)
        signature = request.model_spec.signature_name or "serving_default"
        if signature not in servable.signature_defs:
            msg = f'Serving signature key "{signature}" not found.'
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, msg)
        expected = set(servable.signature_defs[signature].inputs)
        if set(request.inputs) != expected:
            msg = f"inputs {sorted(request.inputs)} != signature inputs {sorted(expected)}"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, msg)
        try:
            inputs = {k: to_float_array(v) for k, v in request.inputs.items()}
            outputs = await self.server.run(servable, signature, inputs)
        except (ValueError, tf.errors.InvalidArgumentError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.server.model_name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for key, value in outputs.items():
            if value.dtype == np.float32:
                response.outputs[key].CopyFrom(float_tensor(value))
            else:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await self.server.admit(context)
        servable = await self.server.servable(request.model_spec, context)
        if list(request.metadata_field) != ["signature_def"]:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Metadata field signature_def is required")
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in servable.signature_defs.items():
            sig_map.signature_def[key].CopyFrom(value)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.server.model_name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(sig_map)
        return response


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    def __init__(self, server: InProcessModelServer) -> None:
        self.server = server

    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await self.server.admit(context)
        spec = request.model_spec
        if spec.name != self.server.model_name:
            msg = f"Could not find any versions of model {spec.name}"
            await context.abort(grpc.StatusCode.NOT_FOUND, msg)
        versions = sorted(self.server._servables)
        if spec.HasField("version"):
            versions = [v for v in versions if v == spec.version.value]
            if not versions:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"Could not find version {spec.version.value}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in versions:
            response.model_version_status.add(
                version=version,
                state=get_model_status_pb2.ModelVersionStatus.State.AVAILABLE,
                status=status_pb2.StatusProto(error_code=0),
            )
        return response
