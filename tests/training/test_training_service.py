from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from schemas.retrain import RetrainRequest, RetrainStatus
from training.errors import DatasetError, TrainerBusy
from training.service import TrainerService
from training.triggers import MAX_BODY_BYTES, make_app

TOKEN = "s3cret-token"


class FakeTrainer:
    """Stands in for the training pipeline: records overlap, reports progress, can be made to fail."""

    def __init__(self) -> None:
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, request: RetrainRequest, progress: Any) -> dict[str, Any]:
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            progress("training")
            self.release.wait(5)
            if request.reason == "fail":
                raise DatasetError("no transactions in the window")
            return {
                "version": 7,
                "metrics": {"auc_roc": 0.9, "average_precision": float("nan")},
                "gate": {"promoted_to": "canary", "reason": "beats stable"},
            }
        finally:
            with self.lock:
                self.running -= 1


def _request(rid: str, **kw: Any) -> RetrainRequest:
    return RetrainRequest(request_id=rid, requested_by="analyst", **kw)


async def test_one_job_at_a_time_and_status_sequence() -> None:
    published: list[RetrainStatus] = []

    async def publish(status: RetrainStatus) -> None:
        published.append(status)

    fake = FakeTrainer()
    service = TrainerService(fake, publish)
    for rid in ("a", "b", "c"):
        await service.submit(_request(rid, reason="fail" if rid == "b" else ""))
    service.start()
    await asyncio.wait_for(service.join(), 20)
    await service.stop()
    assert fake.max_running == 1
    assert service.status("a").state == "succeeded"  # type: ignore[union-attr]
    assert service.status("a").model_version == 7  # type: ignore[union-attr]
    assert service.status("a").promoted_to == "canary"  # type: ignore[union-attr]
    assert service.status("a").metrics == {"auc_roc": 0.9}  # type: ignore[union-attr]  # NaN left out
    failed = service.status("b")
    assert failed is not None and failed.state == "failed" and "no transactions" in failed.message
    states = [s.state for s in published if s.request_id == "a"]
    assert states[0] == "queued" and states[-1] == "succeeded" and "running" in states
    assert any(s.message == "training" for s in published)


async def test_duplicate_request_id_is_refused_while_pending() -> None:
    service = TrainerService(FakeTrainer())
    await service.submit(_request("dup"))
    with pytest.raises(TrainerBusy):
        await service.submit(_request("dup"))


@pytest.fixture()
async def client() -> Any:
    fake = FakeTrainer()
    service = TrainerService(fake)
    service.start()
    app = make_app(service, SecretStr(TOKEN))
    async with TestClient(TestServer(app)) as c:
        yield c, service, fake
    await service.stop()


async def test_http_requires_the_token(client: Any) -> None:
    c, _, _ = client
    body = {"request_id": "h1", "requested_by": "analyst"}
    assert (await c.post("/retrain", json=body)).status == 401
    assert (await c.post("/retrain", json=body, headers={"Authorization": "Bearer nope"})).status == 401
    assert (await c.get("/retrain/h1")).status == 401


async def test_http_validates_and_limits_the_body(client: Any) -> None:
    c, _, _ = client
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = await c.post("/retrain", data=b"{not json", headers=auth)
    assert r.status == 400
    r = await c.post("/retrain", json={"request_id": "x y!", "requested_by": "a"}, headers=auth)
    assert r.status == 400 and "request_id" in (await r.json())["error"]
    r = await c.post("/retrain", json={"request_id": "ok", "requested_by": "a", "extra": 1}, headers=auth)
    assert r.status == 400
    r = await c.post("/retrain", data=b"x" * (MAX_BODY_BYTES + 1), headers=auth)
    assert r.status == 413


async def test_http_submit_and_follow(client: Any) -> None:
    c, service, _ = client
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = await c.post("/retrain", json={"request_id": "h2", "requested_by": "analyst", "train_days": 7}, headers=auth)
    assert r.status == 202 and (await r.json())["state"] == "queued"
    await asyncio.wait_for(service.join(), 20)
    r = await c.get("/retrain/h2", headers=auth)
    body = await r.json()
    assert body["state"] == "succeeded" and body["model_version"] == 7 and body["result"]["version"] == 7
    assert (await c.get("/retrain/nope", headers=auth)).status == 404


def test_app_refuses_to_run_without_a_token() -> None:
    with pytest.raises(ValueError, match="FRAUD_API_TOKEN"):
        make_app(TrainerService(FakeTrainer()), None)


def test_pipeline_job_runner_end_to_end(tmp_path: Path, history: Any) -> None:
    """The real pipeline on the tiny history: exports version 1 (stable), then 2 goes through the gate."""
    from tests.fixtures.training import START, TINY
    from training.pipeline import TrainJob, run_training_job

    job = TrainJob(input_path=tmp_path / "unused.parquet", train_start=START.date(), config=TINY, tflite=False)
    repo = tmp_path / "models"
    first = run_training_job(
        job,
        repository=repo,
        model_name="fraud_dnn",
        runs_dir=tmp_path / "runs",
        history=history,
        progress=lambda m: None,
    )
    assert first["version"] == 1 and first["gate"]["promoted_to"] == "stable"
    assert (repo / "fraud_dnn" / "1" / "saved_model.pb").exists()
    assert (Path(first["run_dir"]) / "fold-2018-04-01" / "pr_curve.png").exists()
    second = run_training_job(
        job,
        repository=repo,
        model_name="fraud_dnn",
        runs_dir=tmp_path / "runs",
        history=history,
        progress=lambda m: None,
    )
    assert second["version"] == 2
    # Same seed, same data: not better than stable, so no canary.
    assert second["gate"]["promoted_to"] is None and second["labels"] == {"stable": 1}
    assert second["gate"]["stable"] == pytest.approx(second["gate"]["candidate"], abs=1e-6)
