"""The trainer service's doors: a token-protected loopback HTTP API and the ``retrain-requests`` topic.

HTTP (aiohttp)::

    POST /retrain          Authorization: Bearer <api_token>, JSON RetrainRequest → 202 + status
    GET  /retrain/{id}     → status (+ result when finished)
    GET  /retrain          → all statuses
    GET  /healthz

Bodies are capped (``MAX_BODY_BYTES``) before parsing; malformed or invalid JSON is a 400 naming the
field; a duplicate or a full queue is a 409/503 (the caller may retry later).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import defaultdict, deque
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from config.kafka import KafkaConnection, as_connection
from schemas.codec import Rejection, decode, encode
from schemas.retrain import RetrainRequest, RetrainStatus
from training.errors import TrainerBusy
from training.service import TrainerService

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
SERVICE_KEY: web.AppKey[TrainerService] = web.AppKey("trainer", TrainerService)
TOKEN_KEY: web.AppKey[SecretStr] = web.AppKey("token", SecretStr)


def _status_json(status: RetrainStatus) -> dict[str, Any]:
    out: dict[str, Any] = status.model_dump(mode="json")
    return out


def _authorised(request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, supplied = header.partition(" ")
    expected = request.app[TOKEN_KEY].get_secret_value()
    # Constant-time comparison: the token must not leak through response timing.
    return scheme.lower() == "bearer" and hmac.compare_digest(supplied.encode(), expected.encode())


async def _post_retrain(request: web.Request) -> web.Response:
    if not _authorised(request):
        return web.json_response({"error": "missing or wrong bearer token"}, status=401)
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return web.json_response({"error": f"body over {MAX_BODY_BYTES} bytes"}, status=413)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return web.json_response({"error": f"body over {MAX_BODY_BYTES} bytes"}, status=413)
    parsed = decode(RetrainRequest, raw, max_bytes=MAX_BODY_BYTES)
    if isinstance(parsed, Rejection):
        return web.json_response({"error": parsed.error, "reason": parsed.reason}, status=400)
    try:
        status = await request.app[SERVICE_KEY].submit(parsed)
    except TrainerBusy as exc:
        code = 503 if "queue is full" in str(exc) else 409
        return web.json_response({"error": str(exc)}, status=code)
    return web.json_response(_status_json(status), status=202)


async def _get_one(request: web.Request) -> web.Response:
    if not _authorised(request):
        return web.json_response({"error": "missing or wrong bearer token"}, status=401)
    service = request.app[SERVICE_KEY]
    rid = request.match_info["request_id"]
    status = service.status(rid)
    if status is None:
        return web.json_response({"error": f"no request {rid}"}, status=404)
    body = _status_json(status)
    result = service.result(rid)
    if result is not None:
        body["result"] = result
    return web.json_response(body)


async def _get_all(request: web.Request) -> web.Response:
    if not _authorised(request):
        return web.json_response({"error": "missing or wrong bearer token"}, status=401)
    return web.json_response([_status_json(s) for s in request.app[SERVICE_KEY].statuses()])


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def make_app(service: TrainerService, token: SecretStr | None) -> web.Application:
    if token is None or not token.get_secret_value():
        msg = "the retrain HTTP API needs FRAUD_API_TOKEN; refusing to serve it unauthenticated"
        raise ValueError(msg)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SERVICE_KEY] = service
    app[TOKEN_KEY] = token
    app.router.add_post("/retrain", _post_retrain)
    app.router.add_get("/retrain", _get_all)
    app.router.add_get("/retrain/{request_id}", _get_one)
    app.router.add_get("/healthz", _healthz)
    return app


async def serve_http(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Start the API (loopback by default); returns the runner (``await runner.cleanup()``) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only through the server's sockets
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


class KafkaStatusPublisher:
    """Publishes each ``RetrainStatus`` to the status topic, keyed by request id (ordered per request)."""

    def __init__(self, kafka: KafkaConnection | str, topic: str) -> None:
        self.topic = topic
        # idempotent: a retried send after a leader change is neither duplicated nor reordered
        self._producer = as_connection(kafka).producer(acks="all", enable_idempotence=True)

    async def start(self) -> None:
        await self._producer.start()

    async def __call__(self, status: RetrainStatus) -> None:
        await self._producer.send_and_wait(self.topic, encode(status), key=status.request_id.encode())

    async def close(self) -> None:
        await self._producer.stop()


class _Intake:
    """The consumed records of each partition, in offset order, until they may be committed: a record is
    done when its request finished (succeeded or failed) or it held nothing to run (bad, a duplicate of a
    queued request). Offsets are committed up to the first record not done."""

    def __init__(self) -> None:
        self._records: dict[Any, deque[tuple[int, str | None]]] = defaultdict(deque)
        self._committed: dict[Any, int] = {}

    def add(self, tp: Any, offset: int, request_id: str | None) -> None:
        self._records[tp].append((offset, request_id))

    def committable(self, service: TrainerService) -> dict[Any, int]:
        out: dict[Any, int] = {}
        for tp, records in self._records.items():
            upto = None
            while records and _finished(service, records[0][1]):
                upto = records.popleft()[0] + 1
            if upto is not None and upto > self._committed.get(tp, -1):
                out[tp] = self._committed[tp] = upto
        return out


def _finished(service: TrainerService, request_id: str | None) -> bool:
    if request_id is None:
        return True
    status = service.status(request_id)
    return status is not None and status.state in ("succeeded", "failed")


async def _take(service: TrainerService, tp: Any, message: Any, max_bytes: int) -> str | None:
    """Queue the record's request; its id, or None when it holds nothing to run (bad, or already queued)."""
    parsed = decode(RetrainRequest, message.value, max_bytes=max_bytes)
    if isinstance(parsed, Rejection):
        log.warning("%s[%d]@%d: bad retrain request (%s): %s", tp.topic, tp.partition, message.offset,
                    parsed.reason, parsed.error)
        return None
    try:
        await service.submit(parsed, wait=True)
    except TrainerBusy as exc:  # a redelivery of a request still queued or running
        log.warning("%s[%d]@%d: %s", tp.topic, tp.partition, message.offset, exc)
        return None
    return parsed.request_id


async def consume_retrain_requests(
    kafka: KafkaConnection | str,
    topic: str,
    service: TrainerService,
    *,
    group_id: str = "fraudstream-trainer",
    stop: asyncio.Event | None = None,
    max_bytes: int = MAX_BODY_BYTES,
    poll_ms: int = 500,
) -> None:
    """Feed ``topic`` into the service until ``stop`` is set. Bad records are logged with their offset and
    skipped; a redelivered request still queued or running is ignored.

    A request's offset is committed only once its job finished: a trainer stopped or killed with requests
    queued or running reads them again when it restarts (nothing lost), and a request that had already
    produced a model version when the trainer died is answered with that version, not trained again
    (``training.pipeline.make_job_runner``). While the service's queue is full the partitions are paused,
    so the consumer keeps polling and stays in its group however long a training takes."""
    consumer = as_connection(kafka).consumer(
        topic, group_id=group_id, enable_auto_commit=False, auto_offset_reset="earliest",
    )
    await consumer.start()
    stop = stop or asyncio.Event()
    intake = _Intake()
    try:
        while not stop.is_set():
            room = service.free_slots()
            if room:
                consumer.resume(*consumer.assignment())
            else:
                consumer.pause(*consumer.assignment())
            batches = await consumer.getmany(timeout_ms=poll_ms, max_records=max(1, room))
            for tp, messages in batches.items():
                for message in messages:
                    intake.add(tp, message.offset, await _take(service, tp, message, max_bytes))
            offsets = intake.committable(service)
            if offsets:
                await consumer.commit(offsets)
    finally:
        await consumer.stop()
