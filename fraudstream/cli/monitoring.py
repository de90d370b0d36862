"""``fraudstream dashboard`` (page + drift monitor + /metrics) and ``fraudstream monitor`` (headless)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from config.settings import Settings, load_settings
from fraudstream.cli.args import positive_float, positive_int, tcp_port
from fraudstream.cli.services import require_kafka, require_redis

if TYPE_CHECKING:  # the monitor's imports (aiokafka, numpy) are loaded only when a command runs
    from monitoring.service import DriftMonitor
    from monitoring.windows import WindowSpec


def _add_drift_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--windows",
        default="5m=300,1h=3600,1d=86400", type=_windows,
        help="sliding windows as name=seconds, comma-separated (default 5m,1h,1d)",
    )
    parser.add_argument(
        "--psi-threshold", type=positive_float, default=0.2, help="PSI above this is drift (default 0.2)"
    )
    parser.add_argument(
        "--consecutive",
        type=positive_int,
        default=3,
        help="evaluations in a row above the threshold before an alert (default 3)",
    )
    parser.add_argument(
        "--min-samples",
        type=positive_int,
        default=200,
        help="records a window needs before it is evaluated (default 200)",
    )
    parser.add_argument(
        "--bucket-s", type=positive_float, default=None,
        help="window resolution in seconds: the setting FRAUD_DRIFT_BUCKET_S (default 10), which the workers' "
        "feature sketches use too; given here, it must equal that setting",
    )
    parser.add_argument("--evaluate-every", type=positive_float, default=5.0, help="seconds between evaluations")
    parser.add_argument(
        "--retrain", action="store_true", help="also publish retrain-requests on sustained drift"
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="model directory with versions and references (default <home>/models/<model_name>)",
    )
    parser.add_argument(
        "--no-feature-sketch",
        action="store_true",
        help="do not read the workers' per-feature histograms from Redis",
    )
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])


class BucketMismatch(ValueError):
    """``--bucket-s`` differs from the workers' setting: the monitor would read keys nobody writes."""


def _check_bucket(settings: Settings, args: argparse.Namespace) -> None:
    if args.bucket_s is not None and args.bucket_s != settings.drift_bucket_s:
        msg = (f"--bucket-s {args.bucket_s:g} differs from FRAUD_DRIFT_BUCKET_S={settings.drift_bucket_s:g}, the "
               "bucket size the workers write their feature sketches in; set FRAUD_DRIFT_BUCKET_S for workers and "
               "monitor alike")
        raise BucketMismatch(msg)


def _windows(text: str) -> tuple[WindowSpec, ...]:
    from monitoring.windows import WindowSpec

    try:
        return WindowSpec.parse_many(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _require_services(settings: Settings, args: argparse.Namespace) -> None:
    require_kafka(settings)
    if not args.no_feature_sketch:
        require_redis(settings)


def _build_monitor(settings: Settings, args: argparse.Namespace) -> DriftMonitor:
    from monitoring.drift import DriftConfig
    from monitoring.service import DriftMonitor, MonitorOptions

    _check_bucket(settings, args)
    drift = DriftConfig(
        windows=args.windows,
        # One setting for the monitor's buckets and the workers' feature sketches (FRAUD_DRIFT_BUCKET_S).
        bucket_s=settings.drift_bucket_s,
        psi_threshold=args.psi_threshold,
        consecutive=max(1, args.consecutive),
        min_samples=max(1, args.min_samples),
        retrain=args.retrain,
    )
    options = MonitorOptions(
        bootstrap=settings.kafka_bootstrap,
        topics=settings.topics,
        model_dir=args.model_dir or settings.model_repository / settings.model_name,
        drift=drift,
        evaluate_every_s=args.evaluate_every,
        lag_group=settings.app_id,
        kafka=settings.kafka,
    )
    redis = None if args.no_feature_sketch else settings.redis.client()
    return DriftMonitor(options, redis=redis)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _start_monitor(args: argparse.Namespace) -> tuple[Settings, DriftMonitor] | None:
    """Logging, settings, the bucket check and the services check of ``monitor`` and ``dashboard``, then the
    monitor; None after a usage error (said on stderr; the command exits with 2)."""
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    try:
        _check_bucket(settings, args)  # a usage error: before any connection is tried
    except BucketMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    _require_services(settings, args)
    return settings, _build_monitor(settings, args)


def _dashboard(args: argparse.Namespace) -> int:
    from monitoring.dashboard import create_app, serve

    started = _start_monitor(args)
    if started is None:
        return 2
    settings, monitor = started
    token = settings.api_token.get_secret_value() if settings.api_token else None

    async def main() -> None:
        runner, port = await serve(create_app(monitor, api_token=token), args.host, args.port)
        print(f"dashboard on http://{args.host}:{port}/ (metrics at /metrics)", file=sys.stderr, flush=True)
        try:
            await _until_signalled()
        finally:
            await runner.cleanup()

    asyncio.run(main())
    return 0


def _monitor(args: argparse.Namespace) -> int:
    started = _start_monitor(args)
    if started is None:
        return 2
    _, monitor = started

    async def main() -> None:
        from prometheus_client import start_http_server

        server, _ = start_http_server(args.metrics_port, addr=args.host, registry=monitor.registry)
        print(
            f"drift monitor running; metrics on {args.host}:{server.server_port}/metrics",
            file=sys.stderr,
            flush=True,
        )
        await monitor.start()
        try:
            await _until_signalled()
        finally:
            await monitor.stop()
            server.shutdown()

    asyncio.run(main())
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's sub-commands to the ``fraudstream`` parser."""
    dash = commands.add_parser(
        "dashboard", help="drift and operations page with /metrics (runs the drift monitor)"
    )
    dash.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    dash.add_argument("--port", type=tcp_port, default=8080, help="port (default 8080; 0 picks a free one)")
    _add_drift_options(dash)
    dash.set_defaults(handler=_dashboard)

    mon = commands.add_parser(
        "monitor", help="headless drift monitor: drift-alerts, retrain-requests, /metrics"
    )
    mon.add_argument("--host", default="127.0.0.1", help="metrics bind address (default loopback)")
    mon.add_argument("--metrics-port", type=tcp_port, default=9109, help="metrics port (default 9109)")
    _add_drift_options(mon)
    mon.set_defaults(handler=_monitor)
