"""The ``retrain-requests`` topic on the real broker: a request is trained (a real, tiny Keras model, exported
to the repository), its offset is committed only once its job finished, and a trainer killed mid-queue and
started again loses and repeats nothing — through ``consume_retrain_requests`` in this process and through
``fraudstream trainer serve`` as a separate process."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from config.kafka import ensure_topics
from schemas.retrain import RetrainRequest
from tests.fixtures.topics import produce
from tests.fixtures.training import START, TINY, synthetic_history
from training.dataset import ColumnMapping
from training.pipeline import TrainJob, make_job_runner
from training.registry import ModelRegistry
from training.service import TrainerService
from training.triggers import consume_retrain_requests

pytestmark = pytest.mark.integration

MAPPING = {"transaction_id": "transaction_id", "card": "card_ref", "terminal": "terminal_id",
           "event_time": "event_time", "amount": "amount", "label": "is_fraud"}


@pytest.fixture(scope="module")
def history_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three weeks of synthetic history as a CSV and its column mapping: a training, gap and test week."""
    folder = tmp_path_factory.mktemp("retrain-history")
    tx, labels = synthetic_history(days=21, per_day=30)
    csv = folder / "history.csv"
    tx.assign(is_fraud=labels["is_fraud"].astype(int).to_numpy()).to_csv(csv, index=False)
    mapping = folder / "mapping.json"
    mapping.write_text(json.dumps(MAPPING))
    return csv, mapping


def request(request_id: str) -> bytes:
    return RetrainRequest(request_id=request_id, requested_by="test", train_start=START.date(),
                          train_days=7).model_dump_json().encode()


async def committed(bootstrap: str, group: str, topic: str) -> int | None:
    """The group's committed offset of the topic's only partition (None: nothing committed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    found = offsets.get(TopicPartition(topic, 0))
    return None if found is None or found.offset < 0 else int(found.offset)


async def until(condition: Callable[[], Any], timeout_s: float, what: str) -> None:
    """Poll ``condition`` (a function, or one returning an awaitable) until it is true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


async def commits(bootstrap: str, group: str, topic: str, expected: int, timeout_s: float = 10.0) -> None:
    """Wait until the group committed ``expected`` (commits follow a finished job within a poll)."""
    seen: list[int | None] = []

    async def reached() -> bool:
        seen.append(await committed(bootstrap, group, topic))
        return seen[-1] == expected

    try:
        await until(reached, timeout_s, f"offset {expected} committed")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the group committed {seen[-1]}") from None


def versions_by_request(repository: Path) -> dict[str, list[int]]:
    registry = ModelRegistry(repository, "fraud_dnn")
    out: dict[str, list[int]] = {}
    for version in registry.versions():
        out.setdefault(str(registry.metadata(version).get("request_id")), []).append(version)
    return out


class HeldRunner:
    """The real job runner, held at the start of each job until ``release`` is set (so the test can look
    at the committed offsets while a job runs)."""

    def __init__(self, run: Callable[[RetrainRequest, Callable[[str], None]], dict[str, Any]]) -> None:
        self.run = run
        self.release = threading.Event()
        self.started: list[str] = []

    def __call__(self, req: RetrainRequest, progress: Callable[[str], None]) -> dict[str, Any]:
        self.started.append(req.request_id)
        assert self.release.wait(120), "the test never released the job"
        return self.run(req, progress)


async def test_requests_are_trained_and_committed_only_once_finished(
    kafka_bootstrap: str, history_files: tuple[Path, Path], tmp_path: Path
) -> None:
    csv, _ = history_files
    topic, group = f"retrain-requests-{uuid.uuid4().hex[:8]}", f"trainer-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, {topic: 1})
    repository = tmp_path / "models"
    runner = HeldRunner(make_job_runner(
        TrainJob(input_path=csv, mapping=ColumnMapping(**MAPPING), config=TINY, tflite=False),
        repository=repository, model_name="fraud_dnn", runs_dir=tmp_path / "runs",
    ))
    # offsets 0..3: a request, a bad record, the same request again (a redelivery), a second request
    await produce(kafka_bootstrap, [(topic, None, value) for value in
                                    (request("k1"), b"{oops", request("k1"), request("k2"))])
    service = TrainerService(runner)
    service.start()
    stop = asyncio.Event()
    consumer = asyncio.create_task(consume_retrain_requests(kafka_bootstrap, topic, service, group_id=group,
                                                            stop=stop, poll_ms=100))
    try:
        await until(lambda: runner.started == ["k1"] and (s := service.status("k2")) is not None
                    and s.state == "queued", 60, "k1 running and k2 queued")
        await asyncio.sleep(1.0)  # ten polls of the consumer: time enough to commit, were it to do so early
        assert await committed(kafka_bootstrap, group, topic) is None, "committed before k1 was trained"

        runner.release.set()
        await until(lambda: all((s := service.status(r)) is not None and s.state == "succeeded"
                                for r in ("k1", "k2")), 120, "k1 and k2 trained")
        await commits(kafka_bootstrap, group, topic, 4)
        assert versions_by_request(repository) == {"k1": [1], "k2": [2]}
        assert runner.started == ["k1", "k2"]  # the bad record skipped, the duplicate refused

        # k1 once more, after it finished (a redelivery after a restart): answered, not trained again.
        await produce(kafka_bootstrap, [(topic, None, request("k1"))])
        await until(lambda: runner.started == ["k1", "k2", "k1"]
                    and (s := service.status("k1")) is not None and s.state == "succeeded", 60, "k1 again")
        await commits(kafka_bootstrap, group, topic, 5)
        status = service.status("k1")
        assert status is not None and status.model_version == 1 and "already trained" in status.message
        assert versions_by_request(repository) == {"k1": [1], "k2": [2]}
    finally:
        runner.release.set()
        stop.set()
        await asyncio.wait_for(consumer, 30)
        await service.stop()


class StatusReader:
    """Reads the ``retrain-status`` topic from its beginning: each request's latest state."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                         enable_auto_commit=False)
        self.states: dict[str, list[str]] = {}

    async def poll(self) -> None:
        for messages in (await self.consumer.getmany(timeout_ms=200)).values():
            for m in messages:
                status = orjson.loads(m.value)
                self.states.setdefault(status["request_id"], []).append(status["state"])

    def last(self, request_id: str) -> str | None:
        return (self.states.get(request_id) or [None])[-1]


@pytest.fixture()
def trainer_env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
            "FRAUD_HOME": str(tmp_path / "home"), "FRAUD_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "FRAUD_API_TOKEN": "test-token", "FRAUD_TOPICS__RETRAIN_REQUESTS": f"retrain-requests-{run}",
            "FRAUD_TOPICS__RETRAIN_STATUS": f"retrain-status-{run}"}


@pytest.fixture()
def trainers(trainer_env: dict[str, str], history_files: tuple[Path, Path], tmp_path: Path
             ) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Starts ``fraudstream trainer serve`` processes (a quick model, one epoch, on the test history)."""
    csv, mapping = history_files
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        started.append(subprocess.Popen(
            [sys.executable, "-m", "fraudstream", "trainer", "serve", "--input", str(csv), "--mapping",
             str(mapping), "--quick", "--epochs", "1", "--threads", "1", "--port", "0"],
            env=trainer_env, stdout=log, stderr=subprocess.STDOUT,
        ))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(30)


async def test_a_trainer_killed_mid_queue_loses_and_repeats_nothing(
    kafka_bootstrap: str, trainer_env: dict[str, str], trainers: Callable[[str], subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    requests_topic = trainer_env["FRAUD_TOPICS__RETRAIN_REQUESTS"]
    status_topic = trainer_env["FRAUD_TOPICS__RETRAIN_STATUS"]
    await ensure_topics(kafka_bootstrap, {requests_topic: 1, status_topic: 1})
    repository = Path(trainer_env["FRAUD_HOME"]) / "models"
    await produce(kafka_bootstrap, [(requests_topic, None, request(r)) for r in ("r1", "r2", "r3")])
    reader = StatusReader(kafka_bootstrap, status_topic)
    await reader.consumer.start()
    try:
        first = trainers("trainer-1")

        async def r1_done_r2_running() -> bool:
            await reader.poll()
            assert first.poll() is None, (tmp_path / "trainer-1.log").read_text()[-3000:]
            return reader.last("r1") == "succeeded" and reader.last("r2") == "running"

        await until(r1_done_r2_running, 300, "r1 trained and r2 running")
        # r1's offset is committed once its job finished; r2's and r3's must not be.
        await commits(kafka_bootstrap, "fraudstream-trainer", requests_topic, 1)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        before = versions_by_request(repository)
        assert before == {"r1": [1]}, f"the kill did not land while r2 was training: {before}"
        assert reader.last("r3") == "queued"

        second = trainers("trainer-2")

        async def all_done() -> bool:
            await reader.poll()
            assert second.poll() is None, (tmp_path / "trainer-2.log").read_text()[-3000:]
            return reader.last("r2") == "succeeded" and reader.last("r3") == "succeeded"

        await until(all_done, 300, "r2 and r3 trained after the restart")
        await commits(kafka_bootstrap, "fraudstream-trainer", requests_topic, 3)
    finally:
        await reader.consumer.stop()
    # Each request trained exactly once: r1 was not trained again, r2 (killed mid-training) and r3 (queued)
    # were not lost.
    assert versions_by_request(repository) == {"r1": [1], "r2": [2], "r3": [3]}
    states = reader.states
    assert states["r1"].count("queued") == 1 and states["r1"].count("succeeded") == 1, states["r1"]
    assert states["r2"].count("queued") == 2 and states["r2"].count("succeeded") == 1, states["r2"]
    assert states["r3"].count("queued") == 2 and states["r3"].count("succeeded") == 1, states["r3"]
