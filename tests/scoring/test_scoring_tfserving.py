"""gRPC-specific behaviour: retries only on retryable codes, deadlines, breaker, labels, runtime checks."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf

from config.model import GrpcRetryPolicy, ModelConnection
from scoring.breaker import CircuitBreaker
from scoring.errors import BackendUnavailable, CircuitOpen, InvalidRequest, LabelNotFound, ModelNotFound
from scoring.scorer import Scorer
from scoring.tensors import float_tensor, to_float_array
from scoring.testing.model_factory import DEFAULT_FEATURES, export_model, sample_features, write_labels
from scoring.testing.servicer import InProcessModelServer
from scoring.tfserving import TFServingBackend
from tests.fixtures.scoring import FEATURE_HASH, MODEL


@pytest.fixture
async def server(model_dir: Path):  # type: ignore[no-untyped-def]
    srv = InProcessModelServer(model_dir)
    await srv.start()
    yield srv
    await srv.stop()


def client(
    server: InProcessModelServer, *, label: str | None = "stable", version: int | None = None, retries: int = 2,
    breaker: CircuitBreaker | None = None,
) -> TFServingBackend:
    connection = ModelConnection.tfserving(server.target, MODEL, label=label, version=version, deadline_s=2.0,
                                           retry=GrpcRetryPolicy(retries=retries, backoff_s=0.001))
    return TFServingBackend(connection, expected_feature_hash=FEATURE_HASH, breaker=breaker)


async def test_retries_retryable_codes_then_succeeds(server: InProcessModelServer) -> None:
    backend = client(server)
    await backend.start()
    before = server.predict_calls
    server.fail_with(grpc.StatusCode.UNAVAILABLE, times=2)
    prediction = await backend.predict(sample_features(4))
    assert prediction.scores.shape == (4,)
    assert server.predict_calls - before == 3
    await backend.close()


async def test_a_batch_larger_than_grpcs_default_retry_buffer_is_retried_too(server: InProcessModelServer) -> None:
    backend = client(server)
    await backend.start()
    features = sample_features(6000)
    assert features.nbytes > 256 * 1024  # gRPC's default per-call retry buffer
    before = server.predict_calls
    server.fail_with(grpc.StatusCode.UNAVAILABLE, times=2)
    prediction = await backend.predict(features)
    assert prediction.scores.shape == (6000,)
    assert server.predict_calls - before == 3
    await backend.close()


async def test_does_not_retry_invalid_argument(server: InProcessModelServer) -> None:
    backend = client(server)
    await backend.start()
    before = server.predict_calls
    server.fail_with(grpc.StatusCode.INVALID_ARGUMENT, times=1)
    with pytest.raises(InvalidRequest) as info:
        await backend.predict(sample_features(4))
    assert not info.value.retryable
    assert server.predict_calls - before == 1
    await backend.close()


async def test_deadline_exceeded_is_retryable(server: InProcessModelServer) -> None:
    backend = client(server, retries=0)
    await backend.start()  # with the normal deadline: a loaded machine must not fail the start-up checks
    backend.deadline_s = 0.05
    server.latency_s = 0.2
    with pytest.raises(BackendUnavailable) as info:
        await backend.predict(sample_features(4))
    assert info.value.retryable and "DEADLINE_EXCEEDED" in str(info.value)
    server.heal()
    await backend.close()


async def test_breaker_fails_fast_then_probes(server: InProcessModelServer) -> None:
    breaker = CircuitBreaker(name="t", failure_threshold=2, reset_timeout_s=0.2)
    backend = client(server, retries=0, breaker=breaker)
    await backend.start()
    server.fail_with(grpc.StatusCode.UNAVAILABLE)
    for _ in range(2):
        with pytest.raises(BackendUnavailable):
            await backend.predict(sample_features(1))
    calls = server.predict_calls
    with pytest.raises(CircuitOpen):
        await backend.predict(sample_features(1))
    assert server.predict_calls == calls, "an open circuit must not reach the server"
    server.heal()
    import asyncio

    await asyncio.sleep(0.25)
    assert (await backend.predict(sample_features(1))).scores.shape == (1,)
    assert breaker.state == "closed"
    await backend.close()


async def test_unknown_label_and_model(server: InProcessModelServer) -> None:
    backend = client(server)
    await backend.start()
    with pytest.raises(LabelNotFound):
        await backend.predict(sample_features(2), label="nope")
    await backend.close()
    missing = TFServingBackend(ModelConnection.tfserving(server.target, "other_model"), expected_feature_hash=None)
    with pytest.raises(ModelNotFound):
        await missing.start()
    await missing.close()


async def test_pinned_version(server: InProcessModelServer) -> None:
    backend = client(server, label=None, version=2)
    await backend.start()
    assert (await backend.predict(sample_features(2))).model_version == 2
    await backend.close()


async def test_incompatible_new_version_on_the_server_degrades_instead_of_scoring(
    server: InProcessModelServer, model_dir: Path
) -> None:
    backend = client(server)
    scorer = Scorer(backend, model_name=MODEL, feature_names=DEFAULT_FEATURES, feature_hash=FEATURE_HASH)
    await scorer.start()
    export_model(model_dir.parent, model_name=MODEL, version=5, feature_hash="sha256:someone-elses")
    write_labels(model_dir, {"stable": 5})
    server.reload()
    ids = [f"t{i}" for i in range(3)]
    results = await scorer.score_batch(
        sample_features(3), ids=ids, card_refs=ids, amounts=[1.0] * 3, currencies=["EUR"] * 3
    )
    assert all(r.degraded and r.model_version is None for r in results)
    calls = server.predict_calls
    await scorer.score_batch(sample_features(3), ids=ids, card_refs=ids, amounts=[1.0] * 3, currencies=["EUR"] * 3)
    assert server.predict_calls == calls + 1, "a refused version is not re-verified on every batch"
    await scorer.close()


def test_tensor_encoding_matches_tensorflow() -> None:
    x = sample_features(7, seed=9)
    ours = float_tensor(x)
    np.testing.assert_array_equal(tf.make_ndarray(ours), x)
    np.testing.assert_array_equal(to_float_array(tf.make_tensor_proto(x)), x)
    compact = tf.make_tensor_proto(np.full((2, 3), 0.5, np.float32))
    np.testing.assert_array_equal(to_float_array(compact), np.full((2, 3), 0.5, np.float32))
    via_float_val = tf.make_tensor_proto(x)
    via_float_val.ClearField("tensor_content")
    via_float_val.float_val.extend(x.reshape(-1).tolist())
    np.testing.assert_array_equal(to_float_array(via_float_val), x)


async def test_scorer_start_waits_for_a_model_server_that_is_not_up_yet(server: InProcessModelServer) -> None:
    server.fail_with(grpc.StatusCode.UNAVAILABLE, times=4)
    scorer = Scorer(
        client(server, retries=0),
        model_name=MODEL,
        feature_names=DEFAULT_FEATURES,
        feature_hash=FEATURE_HASH,
    )
    await scorer.start(wait_s=10)
    ids = ["a", "b"]
    results = await scorer.score_batch(
        sample_features(2), ids=ids, card_refs=ids, amounts=[1.0, 2.0], currencies=["EUR", "EUR"]
    )
    assert not any(r.degraded for r in results)
    await scorer.close()
