"""``fraudstream train | evaluate | retrain | trainer serve | models list|promote|rollback``.

Thin: parse, build settings, call ``training``. Progress goes to stderr; with ``--json`` the last stdout
line is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import uuid
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.settings import Settings, load_settings
from fraudstream.cli.args import history_input, non_negative_int, positive_int, tcp_port
from fraudstream.cli.services import require_kafka, require_redis

if TYPE_CHECKING:
    from training.evaluate import ScoreProvider

SubParsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _emit(result: Any, as_json: bool) -> None:
    def clean(value: Any) -> Any:
        # JSON has no NaN; an undefined metric (one-class test window) is null.
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    text = json.dumps(clean(result), sort_keys=True)
    if as_json:
        print(text, flush=True)
    else:
        print(json.dumps(clean(result), indent=2, sort_keys=True))


def _fail(message: str) -> int:
    """A failure the command explains itself (exit 1; usage errors are argparse's exit 2)."""
    print(f"error: {message}", file=sys.stderr)
    return 1


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _dates(text: str) -> list[date]:
    return [date.fromisoformat(part.strip()) for part in text.split(",") if part.strip()]


def _mapping(value: str) -> Any:
    if value == "fdh":
        return "fdh"
    from training.dataset import ColumnMapping

    return ColumnMapping(**json.loads(Path(value).read_text()))


def _require_services(args: argparse.Namespace, settings: Settings) -> None:
    """Before TensorFlow starts: the broker of a ``kafka://`` input, and the stack for ``--via stream``."""
    from training.topics import bootstrap_of, is_topic_source

    if is_topic_source(args.input):
        require_kafka(settings.model_copy(update={"kafka_bootstrap": bootstrap_of(str(args.input))}))
    if getattr(args, "via", None) == "stream":
        require_kafka(settings)
        require_redis(settings)


def _setup_tf(args: argparse.Namespace) -> Any:
    """Threads first, then the strategy: both must precede any other TensorFlow work in the process."""
    from training.distribute import configure_threads, make_strategy

    configure_threads(args.threads, args.threads)
    return make_strategy(args.strategy)


def _common(parser: argparse.ArgumentParser) -> None:
    from training.distribute import STRATEGY_KINDS
    from training.simulated import DEFAULT_HISTORY_TRANSACTIONS

    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--input", type=history_input, default=None,
        help="history: a file (Parquet/CSV, see --mapping), kafka://host:port to replay the transactions + "
        "fraud-labels topics, or sim:N[?seed=S&events=E&cards=C&terminals=T] for N simulated transactions "
        f"(default: sim:{DEFAULT_HISTORY_TRANSACTIONS}, the simulator's default population)",
    )
    source.add_argument("--simulate", type=positive_int, default=None, metavar="N",
                        help="history of N transactions from the project's simulator (same as --input sim:N)")
    parser.add_argument("--mapping", default="fdh", help="'fdh' or a JSON file of ColumnMapping fields")
    parser.add_argument("--limit", type=positive_int, default=None, help="read only the first N rows")
    parser.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: the model's)")
    parser.add_argument(
        "--model-config", type=model_overrides, default={}, metavar="JSON",
        help='ModelConfig fields over the default, e.g. \'{"trees": false}\' (an A/B against the default)',
    )
    parser.add_argument("--strategy", choices=STRATEGY_KINDS, default="auto")
    parser.add_argument("--threads", type=positive_int, default=None, help="TensorFlow intra/inter-op threads")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")


def _history_input(args: argparse.Namespace) -> Path:
    """``--input``, else ``--simulate N``, else the default simulated history: never a file outside the clone."""
    from training.simulated import DEFAULT_HISTORY, SCHEME

    if args.input is not None:
        return Path(args.input)
    return Path(f"{SCHEME}{args.simulate}" if args.simulate else DEFAULT_HISTORY)


def _config(args: argparse.Namespace, quick: bool = False) -> Any:
    from dataclasses import replace

    from training.model import ModelConfig
    from training.pipeline import QUICK_CONFIG

    config = replace(QUICK_CONFIG if quick else ModelConfig(), **args.model_config)
    return replace(config, epochs=args.epochs) if args.epochs else config


def model_overrides(text: str) -> dict[str, Any]:
    """``--model-config``: a JSON object of ``ModelConfig`` fields; an unknown field or a value of the wrong
    JSON type is a usage error here, not a failure after the features are computed."""
    import typing
    from dataclasses import fields

    from training.model import ModelConfig

    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"not JSON: {exc}"
        raise argparse.ArgumentTypeError(msg) from None
    if not isinstance(values, dict):
        msg = "must be a JSON object of ModelConfig fields"
        raise argparse.ArgumentTypeError(msg)
    known = {f.name: f for f in fields(ModelConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        msg = f"unknown ModelConfig fields {unknown}; known: {sorted(known)}"
        raise argparse.ArgumentTypeError(msg)
    default = ModelConfig()
    hints = typing.get_type_hints(ModelConfig)
    out: dict[str, Any] = {}
    for name, value in values.items():
        current = getattr(default, name)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)  # hidden layer widths
        # bool is an int in Python: a flag must be true/false, a number must not be a bool
        same = type(value) is type(current) or (type(current) is float and type(value) is int)
        if not same:
            msg = f"{name} must be {type(current).__name__}, not {json.dumps(values[name])}"
            raise argparse.ArgumentTypeError(msg)
        choices = typing.get_args(hints[name]) if typing.get_origin(hints[name]) is typing.Literal else ()
        if choices and value not in choices:  # a misspelt loss must not silently train the default one
            msg = f"{name} must be one of {list(choices)}, not {json.dumps(value)}"
            raise argparse.ArgumentTypeError(msg)
        out[name] = float(value) if type(current) is float else value
    return out


def _train(args: argparse.Namespace) -> int:
    settings = load_settings()
    _require_services(args, settings)  # before TensorFlow's start-up chatter
    from training.errors import TrainingError
    from training.pipeline import TrainJob, run_training_job
    from training.registry import GateConfig

    strategy = _setup_tf(args)
    job = TrainJob(
        input_path=_history_input(args),
        mapping=_mapping(args.mapping),
        train_start=date.fromisoformat(args.train_start) if args.train_start else None,
        train_days=args.days,
        config=_config(args, args.quick),
        limit=args.limit,
        lookback_days=args.lookback_days,
        promote=not args.no_promote,
        tflite=not args.no_tflite,
    )
    try:
        result = run_training_job(
            job,
            repository=settings.model_repository,
            model_name=settings.model_name,
            runs_dir=settings.home / "runs",
            gate=GateConfig(args.gate_metric, args.gate_margin),
            strategy=strategy,
            serving_base_path=settings.tfserving_model_base_path,
        )
    except TrainingError as exc:
        return _fail(str(exc))
    _emit(result, args.json)
    return 0


def resolve_provider(via: str, settings: Settings) -> ScoreProvider:
    """``offline`` is built in (``training.evaluate.OfflineScores``); ``stream`` is
    ``fraudstream.evaluation.StreamScores`` (Kafka, a worker process, Redis), which lives up here in the
    shell because it starts workers; ``training`` only knows the ``ScoreProvider`` Protocol. Imported only
    when asked for, so the trainer's other commands load no streaming code; an import error there is a
    broken installation and surfaces as it is, never as "no stream path"."""
    from training.errors import StreamPathUnavailable
    from training.evaluate import OfflineScores

    if via == "offline":
        return OfflineScores()
    if via != "stream":
        msg = f"unknown score path {via!r}; use 'offline' or 'stream'"
        raise StreamPathUnavailable(msg)
    from fraudstream.evaluation import stream_score_provider

    return stream_score_provider(settings)


def _evaluate(args: argparse.Namespace) -> int:
    settings = load_settings()
    _require_services(args, settings)  # before TensorFlow's start-up chatter
    from datetime import UTC, datetime

    from training.dataset import (
        MODEL_SELECTION_STARTS,
        build_history,
        default_feature_spec,
        latest_fold_starts,
        load_history,
    )
    from training.errors import StreamPathUnavailable, TrainingError
    from training.evaluate import evaluate_protocol
    from training.simulated import is_simulated_source
    from training.topics import is_topic_source

    if args.protocol != "handbook":
        return _fail(f"unknown protocol {args.protocol!r}")
    source = _history_input(args)
    # The handbook's model-selection folds are dates of the fdh file; any other history gets its own
    # latest four weekly folds.
    fdh_file = args.mapping == "fdh" and not is_simulated_source(source) and not is_topic_source(source)
    starts = _dates(args.train_starts) if args.train_starts else list(MODEL_SELECTION_STARTS) if fdh_file else None
    try:
        provider = resolve_provider(args.via, settings)
    except StreamPathUnavailable as exc:
        return _fail(str(exc))
    strategy = _setup_tf(args)
    run_dir = args.run_dir or settings.home / "runs" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-evaluate"
    try:
        transactions, labels = load_history(source, _mapping(args.mapping), args.limit, progress=_progress)
        print(f"computing offline features for {len(transactions)} transactions", file=sys.stderr)
        history = build_history(transactions, labels, default_feature_spec())
        starts = starts or latest_fold_starts(history.day)
        report = evaluate_protocol(history, starts, _config(args), provider, run_dir=run_dir, strategy=strategy,
                                   scores_out=args.scores_out, card_hash=_card_hash(settings))
    except TrainingError as exc:
        return _fail(str(exc))
    _emit(report, args.json)
    return 0


def _card_hash(settings: Settings) -> Any:
    """The worker's keyed card hash: a scores file names cards as scored-transactions does, never in clear."""
    from streams.identity import CardHasher

    return CardHasher(settings.card_hash_key()).reference


def _retrain(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.publish:  # before TensorFlow's start-up chatter
        require_kafka(settings)
    _require_services(args, settings)
    from schemas.retrain import RetrainRequest
    from training.service import TrainerService

    _setup_tf(args)
    request = RetrainRequest(
        request_id=args.request_id or f"cli-{uuid.uuid4().hex[:12]}",
        requested_by=args.requested_by,
        reason=args.reason,
        input_path=str(_history_input(args)),
        train_start=date.fromisoformat(args.train_start) if args.train_start else None,
        train_days=args.days,
        promote=not args.no_promote,
    )
    runner = _job_runner(args, settings)

    async def report(status: Any) -> None:
        print(f"[{status.state}] {status.message}", file=sys.stderr, flush=True)

    async def main() -> Any:
        publisher = await _publisher(settings) if args.publish else None

        async def publish(status: Any) -> None:
            await report(status)
            if publisher is not None:
                await publisher(status)

        service = TrainerService(runner, publish)
        try:
            await service.submit(request)
            service.start()
            await service.join()
        finally:
            await service.stop()
            if publisher is not None:
                await publisher.close()
        return service.status(request.request_id), service.result(request.request_id)

    status, result = asyncio.run(main())
    _emit({"status": status.model_dump(mode="json"), "result": result}, args.json)
    return 0 if status.state == "succeeded" else 1


def _job_runner(args: argparse.Namespace, settings: Settings) -> Any:
    """The trainer's job runner (``retrain`` and ``trainer serve``): the command line's history, mapping and
    model options as the defaults of every job, the model repository and runs of this home."""
    from training.pipeline import TrainJob, make_job_runner

    defaults = TrainJob(
        input_path=_history_input(args),
        mapping=_mapping(args.mapping),
        config=_config(args, args.quick),
        limit=args.limit,
    )
    return make_job_runner(
        defaults,
        repository=settings.model_repository,
        model_name=settings.model_name,
        runs_dir=settings.home / "runs",
        serving_base_path=settings.tfserving_model_base_path,
    )


async def _publisher(settings: Settings) -> Any:
    from training.triggers import KafkaStatusPublisher

    publisher = KafkaStatusPublisher(settings.kafka, settings.topics.retrain_status)
    await publisher.start()
    return publisher


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    if not args.no_kafka:  # before TensorFlow's start-up chatter
        require_kafka(settings)
    from training.service import TrainerService
    from training.triggers import consume_retrain_requests, make_app, serve_http

    _setup_tf(args)
    runner = _job_runner(args, settings)

    async def main() -> None:
        publisher = None if args.no_kafka else await _publisher(settings)
        service = TrainerService(runner, publisher)
        service.start()
        http, port = await serve_http(make_app(service, settings.api_token), args.host, args.port)
        print(f"trainer API on http://{args.host}:{port}", file=sys.stderr, flush=True)
        try:
            if args.no_kafka:
                await asyncio.Event().wait()
            else:
                await consume_retrain_requests(settings.kafka, settings.topics.retrain_requests, service)
        finally:
            await http.cleanup()
            await service.stop()
            if publisher is not None:
                await publisher.close()

    try:
        asyncio.run(main())
    except ValueError as exc:
        return _fail(str(exc))
    return 0


def _models(args: argparse.Namespace) -> int:
    from training.errors import RegistryError
    from training.registry import ModelRegistry

    settings = load_settings()
    registry = ModelRegistry(settings.model_repository, settings.model_name,
                             serving_base_path=settings.tfserving_model_base_path)
    try:
        if args.models_command == "promote":
            # The checks the workers' hot reload runs: a version they would refuse is never labelled.
            from features import FEATURE_LIST

            registry.promote(args.version, args.label, verify=True, expected_feature_hash=FEATURE_LIST.hash)
        elif args.models_command == "rollback":
            registry.rollback(args.label)
    except RegistryError as exc:
        return _fail(str(exc))
    _emit(registry.describe(), args.json)
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's sub-commands to the ``fraudstream`` parser."""
    train = commands.add_parser("train", help="train, evaluate on the next test week, export, apply the gate")
    _common(train)
    train.add_argument("--train-start", default=None, help="YYYY-MM-DD (default: latest full fold)")
    train.add_argument("--days", type=positive_int, default=7, help="training window in days")
    train.add_argument("--quick", action="store_true", help="small model, few epochs (~1 min): demo")
    train.add_argument("--lookback-days", type=non_negative_int, default=None,
                       help="history kept before the training start")
    train.add_argument("--no-promote", action="store_true")
    train.add_argument("--no-tflite", action="store_true")
    train.add_argument("--gate-metric", default="average_precision")
    train.add_argument("--gate-margin", type=float, default=0.0)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="one model per fold, handbook metrics")
    _common(evaluate)
    evaluate.add_argument("--protocol", default="handbook", choices=["handbook"])
    evaluate.add_argument("--train-starts", default=None, help="D1,D2,… (default: the 4 model-selection folds)")
    evaluate.add_argument("--via", choices=["offline", "stream"], default="offline")
    evaluate.add_argument("--run-dir", type=Path, default=None)
    evaluate.add_argument(
        "--scores-out", type=Path, default=None, metavar="FILE",
        help="write one row per test transaction (transaction_id, fold, score, label, card_ref, day, "
        "unscored_reason) to FILE: CSV, or Parquet for a .parquet name",
    )
    evaluate.set_defaults(handler=_evaluate)

    retrain = commands.add_parser("retrain", help="run one retraining job now through the trainer service")
    _common(retrain)
    retrain.add_argument("--train-start", default=None)
    retrain.add_argument("--days", type=positive_int, default=7, help="training window in days")
    retrain.add_argument("--quick", action="store_true")
    retrain.add_argument("--no-promote", action="store_true")
    retrain.add_argument("--request-id", default=None)
    retrain.add_argument("--requested-by", default="cli")
    retrain.add_argument("--reason", default="")
    retrain.add_argument("--publish", action="store_true", help="also publish status to the retrain-status topic")
    retrain.set_defaults(handler=_retrain)

    trainer = commands.add_parser("trainer", help="the trainer service (HTTP API + retrain-requests topic)")
    trainer_sub = trainer.add_subparsers(dest="trainer_command", required=True)
    serve = trainer_sub.add_parser("serve")
    _common(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=tcp_port, default=8787, help="HTTP port (default 8787; 0 = a free one)")
    serve.add_argument("--quick", action="store_true")
    serve.add_argument("--no-kafka", action="store_true", help="HTTP only (no topic consumer or status topic)")
    serve.set_defaults(handler=_serve)

    models = commands.add_parser("models", help="model versions and labels")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    for name, text in (
        ("list", "versions, labels, metrics"),
        ("promote", "move a label to a version"),
        ("rollback", "stable: previous stable version; canary: drop the canary"),
    ):
        sub = models_sub.add_parser(name, help=text)
        sub.add_argument("--json", action="store_true")
        if name != "list":
            sub.add_argument("--label", choices=["stable", "canary"], default="stable")
        if name == "promote":
            sub.add_argument("--version", type=positive_int, default=None, help="default: the current canary")
        sub.set_defaults(handler=_models)
