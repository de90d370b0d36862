"""``fraudstream bench scoring``: what micro-batching buys on the gRPC path, and the local backend's speed.

All figures come from one run against one in-process servicer serving one real SavedModel:

- ``batched_rows_per_s``: many concurrent callers hand in small groups of rows; the ``MicroBatcher``
  merges them into batches of ``batch`` rows (at most ``in_flight`` Predict calls at once) to the
  ``TFServingBackend``.
- ``per_call_rows_per_s``: one Predict per transaction, ``in_flight`` calls at once, same servicer.
- ``local_rows_per_s``: ``LocalBackend.predict`` at batch ``batch``, one call at a time.
- ``scorer_local_rows_per_s``: the whole ``Scorer.score_batch`` path over the local backend (rollout,
  batcher, outage handling, policy, reason codes) at batch ``batch``: what the worker gets.
- request encoding: ``tensor_content`` filling vs ``tf.make_tensor_proto`` for one batch (microseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

TARGET_SPEEDUP = 20.0
TARGET_LOCAL_ROWS_PER_S = 200_000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchConfig:
    seconds: float = 3.0
    """Measuring time per phase (after a short warm-up)."""
    batch: int = 256
    in_flight: int = 4
    chunk: int = 16
    """Rows each caller hands to the micro-batcher at a time (a faust partition's small take)."""
    hidden: int = 32
    n_features: int = 16


def _progress(message: str) -> None:
    print(f"[bench scoring] {message}", file=sys.stderr, flush=True)


async def _timed(seconds: float, workers: int, step: Callable[[int], Awaitable[int]]) -> tuple[float, list[float]]:
    """Run ``workers`` loops of ``step`` for ``seconds``; returns (rows per second, call latencies in ms)."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    rows = 0

    async def loop(worker: int) -> None:
        nonlocal rows
        i = worker
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            done = await step(i)  # not ``rows += await ...``: that reads ``rows`` before awaiting
            rows += done
            latencies.append((time.perf_counter() - started) * 1000.0)
            i += workers

    started = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(workers)))
    return rows / (time.perf_counter() - started), latencies


def _encoding_us(x: npt.NDArray[np.float32], repeat: int = 300) -> dict[str, float]:
    import tensorflow as tf

    from scoring.tensors import float_tensor, to_float_array

    def per_call(fn: Callable[[], object]) -> float:
        started = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - started) / repeat * 1e6

    proto = float_tensor(x)
    return {
        "encode_us_tensor_content": round(per_call(lambda: float_tensor(x)), 1),
        "encode_us_make_tensor_proto": round(per_call(lambda: tf.make_tensor_proto(x)), 1),
        "decode_us_frombuffer": round(per_call(lambda: to_float_array(proto)), 1),
        "decode_us_make_ndarray": round(per_call(lambda: tf.make_ndarray(proto)), 1),
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return round(float(np.percentile(values, q)), 3)


async def run(config: BenchConfig) -> dict[str, Any]:
    from config.model import ModelConnection
    from scoring.batcher import MicroBatcher
    from scoring.breaker import CircuitBreaker
    from scoring.local import LocalBackend
    from scoring.scorer import Scorer
    from scoring.testing.model_factory import DEFAULT_FEATURES, export_model, feature_list_hash, write_labels
    from scoring.testing.servicer import InProcessModelServer
    from scoring.tfserving import TFServingBackend

    names = DEFAULT_FEATURES[: config.n_features]
    fhash = feature_list_hash(names)
    rng = np.random.default_rng(0)
    pool = rng.normal(0.0, 1.0, (config.batch * 64, len(names))).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="fraudstream-bench-") as tmp:
        _progress(f"exporting a SavedModel ({len(names)} features, hidden {config.hidden}) to {tmp}")
        export_model(Path(tmp), version=1, feature_names=names, hidden=config.hidden)
        model_dir = Path(tmp) / "fraud_dnn"
        write_labels(model_dir, {"stable": 1})
        server = InProcessModelServer(model_dir)
        await server.start()
        # A breaker that never opens during a benchmark: we measure the happy path.
        breaker = CircuitBreaker(name="bench", failure_threshold=1_000_000)
        grpc_backend = TFServingBackend(
            ModelConnection.tfserving(server.target, "fraud_dnn", label="stable"), expected_feature_hash=fhash,
            breaker=breaker,
        )
        local = LocalBackend(model_dir, expected_feature_hash=fhash, poll_interval_s=0)
        batcher = MicroBatcher(
            lambda rows, label: grpc_backend.predict(rows, label=label),
            max_size=config.batch,
            max_wait_s=0.005,
            max_in_flight=config.in_flight,
        )
        try:
            await grpc_backend.start()
            await local.start()
            n_chunks = pool.shape[0] // config.chunk

            async def batched(i: int) -> int:
                j = i % n_chunks
                rows = pool[j * config.chunk : (j + 1) * config.chunk]
                return int((await batcher.score(rows)).scores.shape[0])

            async def per_call(i: int) -> int:
                j = i % pool.shape[0]
                return int((await grpc_backend.predict(pool[j : j + 1])).scores.shape[0])

            n_batches = pool.shape[0] // config.batch

            async def local_step(i: int) -> int:
                j = i % n_batches
                batch = pool[j * config.batch : (j + 1) * config.batch]
                return int((await local.predict(batch)).scores.shape[0])

            callers = config.in_flight * config.batch // config.chunk
            warm = min(0.5, config.seconds / 4)
            _progress(f"gRPC micro-batched: {callers} callers × {config.chunk} rows → batches of {config.batch}")
            await _timed(warm, callers, batched)
            calls_before = batcher.backend_calls
            batched_rps, batched_lat = await _timed(config.seconds, callers, batched)
            mean_batch = len(batched_lat) * config.chunk / max(batcher.backend_calls - calls_before, 1)
            _progress(f"  {batched_rps:,.0f} rows/s (mean batch {mean_batch:.0f} rows)")
            _progress(f"gRPC one Predict per transaction, {config.in_flight} in flight")
            await _timed(warm, config.in_flight, per_call)
            per_call_rps, per_call_lat = await _timed(config.seconds, config.in_flight, per_call)
            _progress(f"  {per_call_rps:,.0f} rows/s")
            _progress(f"local backend, batch {config.batch}, one call at a time")
            await _timed(warm, 1, local_step)
            local_rps, local_lat = await _timed(config.seconds, 1, local_step)
            _progress(f"  {local_rps:,.0f} rows/s")
            _progress(f"Scorer over the local backend (rollout, batcher, policy, reason codes), batch {config.batch}")
            scorer = Scorer(local, model_name="fraud_dnn", feature_names=names, feature_hash=fhash)
            ids = [f"tx-{i}" for i in range(config.batch)]
            currencies = ["EUR"] * config.batch
            amounts = [25.0] * config.batch

            async def scorer_step(i: int) -> int:
                j = i % n_batches
                batch = pool[j * config.batch : (j + 1) * config.batch]
                results = await scorer.score_batch(
                    batch, ids=ids, card_refs=ids, amounts=amounts, currencies=currencies
                )
                return len(results)

            await _timed(warm, 1, scorer_step)
            scorer_rps, _ = await _timed(config.seconds, 1, scorer_step)
            _progress(f"  {scorer_rps:,.0f} rows/s")
            encoding = _encoding_us(pool[: config.batch])
            _progress(f"request encoding for {config.batch} rows: {encoding}")
        finally:
            await batcher.close()
            await grpc_backend.close()
            await local.close()
            await server.stop()
    speedup = batched_rps / per_call_rps if per_call_rps else float("inf")
    return {
        "batched_rows_per_s": round(batched_rps, 1),
        "per_call_rows_per_s": round(per_call_rps, 1),
        "speedup": round(speedup, 2),
        "local_rows_per_s": round(local_rps, 1),
        "scorer_local_rows_per_s": round(scorer_rps, 1),
        "batched_mean_batch_rows": round(mean_batch, 1),
        "batched_call_p50_ms": _pct(batched_lat, 50),
        "batched_call_p99_ms": _pct(batched_lat, 99),
        "per_call_p50_ms": _pct(per_call_lat, 50),
        "per_call_p99_ms": _pct(per_call_lat, 99),
        "local_call_p50_ms": _pct(local_lat, 50),
        "local_call_mean_ms": round(statistics.fmean(local_lat), 3) if local_lat else None,
        **encoding,
        "targets": {"speedup": TARGET_SPEEDUP, "local_rows_per_s": TARGET_LOCAL_ROWS_PER_S},
        "meets_targets": speedup >= TARGET_SPEEDUP and local_rps >= TARGET_LOCAL_ROWS_PER_S,
        "config": asdict(config),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": platform.machine(),
        },
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench scoring`` (shared by the console script and fraudstream/bench/scoring.py)."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON (last stdout line)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per phase")
    parser.add_argument("--batch", type=int, default=256, help="micro-batch size")
    parser.add_argument("--in-flight", type=int, default=4, help="concurrent backend calls in both modes")


def main(args: argparse.Namespace) -> int:
    config = BenchConfig(seconds=args.seconds, batch=args.batch, in_flight=args.in_flight)
    result = asyncio.run(run(config))
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")
    if not result["meets_targets"]:
        _progress("below target (speedup >= 20, local >= 200,000 rows/s)")
    return 0


if __name__ == "__main__":  # python -m fraudstream.bench.scoring: the same as `fraudstream bench scoring`
    _parser = argparse.ArgumentParser(prog="python -m fraudstream.bench.scoring", description=__doc__)
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
