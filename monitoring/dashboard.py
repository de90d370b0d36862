"""``fraudstream dashboard``: the drift and operations page, its JSON feed and ``/metrics``.

The page (``monitoring/static/dashboard.html``) is self-contained: inline CSS and JS, charts drawn as SVG
by the page's own code, no assets from the internet. It polls ``/api/state`` every few seconds.

The only write action, ``POST /api/retrain``, requires ``Authorization: Bearer <api_token>`` (disabled
when no token is configured), accepts at most 4 KiB of JSON, and validates the body before publishing a
``RetrainRequest``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from monitoring.service import DriftMonitor

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("static") / "dashboard.html"
MAX_BODY_BYTES = 4096
MONITOR_KEY = web.AppKey("monitor", DriftMonitor)
TOKEN_KEY = web.AppKey("token", str)
REGISTRIES_KEY = web.AppKey("registries", list[CollectorRegistry])

SECURITY_HEADERS = {
    # Everything is same-origin and inline; nothing else may load or frame the page.
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class RetrainBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]
    requested_by: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@\-]{1,64}$")] = "dashboard"


async def _page(_request: web.Request) -> web.Response:
    return web.Response(body=PAGE.read_bytes(), content_type="text/html", charset="utf-8",
                        headers=SECURITY_HEADERS)


async def _state(request: web.Request) -> web.Response:
    return web.json_response(request.app[MONITOR_KEY].snapshot(), headers=SECURITY_HEADERS)


async def _metrics(request: web.Request) -> web.Response:
    body = b"".join(generate_latest(r) for r in request.app[REGISTRIES_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _health(request: web.Request) -> web.Response:
    ready = request.app[MONITOR_KEY].ready.is_set()
    return web.json_response({"ok": ready}, status=200 if ready else 503)


async def _retrain(request: web.Request) -> web.Response:
    token = request.app[TOKEN_KEY]
    if not token:
        return web.json_response({"error": "write actions are disabled: no api_token configured"}, status=403)
    supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(supplied.encode(), token.encode()):
        return web.json_response({"error": "missing or wrong bearer token"}, status=401)
    if request.content_type != "application/json":
        return web.json_response({"error": "send application/json"}, status=415)
    if request.content_length is None or request.content_length > MAX_BODY_BYTES:
        return web.json_response({"error": f"body must have a Content-Length of at most {MAX_BODY_BYTES}"},
                                 status=413)
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        return web.json_response({"error": "body too large"}, status=413)
    try:
        body = RetrainBody.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        return web.json_response({"error": "invalid body", "details": errors}, status=422)
    retrain = await request.app[MONITOR_KEY].request_retrain(f"dashboard:{body.requested_by}", body.reason)
    return web.json_response({"request_id": retrain.request_id}, status=202)


def create_app(monitor: DriftMonitor, *, api_token: str | None,
               registries: list[CollectorRegistry] | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[MONITOR_KEY] = monitor
    app[TOKEN_KEY] = api_token or ""
    app[REGISTRIES_KEY] = registries or [monitor.registry]
    app.router.add_get("/", _page)
    app.router.add_get("/api/state", _state)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _health)
    app.router.add_post("/api/retrain", _retrain)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await monitor.start()
        yield
        await monitor.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start the app; returns the runner (``await runner.cleanup()`` stops it) and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:  # e.g. the port is in use: stop the monitor the setup started, then say why
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])
