"""``fraudstream worker | simulate | replay``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Iterable

from aiokafka.errors import KafkaConnectionError
from redis.exceptions import RedisError

from config.settings import Settings, load_settings
from features.errors import FeatureError
from features.simulator import SimulationConfig, Simulator, interleave_labels
from fraudstream.cli.args import (
    existing_file,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    share,
)
from fraudstream.cli.errors import ServiceUnreachable
from fraudstream.cli.services import require_kafka, require_model, require_redis
from fraudstream.sources import prefix_problem, run_prefix
from fraudstream.sources.producer import OutboundRecord, ProduceReport, produce
from fraudstream.sources.warmup import WARM_UP_DAYS, take_history, warm_up, with_warm_up


def _run_produce(settings: Settings, records: Iterable[OutboundRecord], rate: float | None, label: str
                 ) -> ProduceReport:
    bootstrap = settings.kafka_bootstrap
    try:
        return asyncio.run(produce(settings.kafka, records, rate=rate, label=label))
    except KafkaConnectionError as exc:  # the broker went away after the check
        raise ServiceUnreachable.kafka(bootstrap) from exc


def _worker(args: argparse.Namespace) -> int:
    from streams.worker import run_worker

    overrides: dict[str, object] = {}
    if args.batch_size:
        overrides["batch_max_size"] = args.batch_size
    settings = load_settings(**overrides)
    require_kafka(settings)
    require_redis(settings)
    require_model(settings)
    path_factory = None
    if settings.pipeline_mode == "echo":  # the benchmark's pass-through ceiling (fraudstream bench e2e)
        from fraudstream.bench.echo import echo_path

        path_factory = echo_path
    elif settings.pipeline_mode != "batched":  # a benchmark baseline (fraudstream bench e2e), resolved here
        from functools import partial

        from fraudstream.bench.baselines import baseline_path

        path_factory = partial(baseline_path, settings.pipeline_mode, settings)
    return run_worker(settings, loglevel=args.loglevel, path_factory=path_factory)


def _simulate(args: argparse.Namespace) -> int:
    settings = load_settings()
    prefix = args.id_prefix if args.id_prefix is not None else run_prefix("sim")
    if (problem := prefix_problem(prefix)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    warming = args.warm_up_days > 0
    # With a warm-up, the population's ids are this run's own (see fraudstream/sources/warmup.py).
    entities = f"{prefix}-{uuid.uuid4().hex[:6]}-" if warming else ""
    config, warm = with_warm_up(SimulationConfig(
        count=args.count, seed=args.seed, shift_after=args.shift_after, cards=args.cards, terminals=args.terminals,
        label_delay_s=args.label_delay_hours * 3600, invalid_share=args.invalid_share, id_prefix=prefix,
        entity_prefix=entities,
    ), args.warm_up_days)
    stream = interleave_labels(Simulator(config), end=time.time())
    require_kafka(settings)
    if warming:
        require_redis(settings)
        print(f"warming the online features with {args.warm_up_days:g} days of the population's history "
              f"({warm:,} transactions, not scored; --warm-up-days 0 skips this)…", file=sys.stderr)
        history = take_history(stream, warm)
        try:
            warmed = asyncio.run(warm_up(settings, *history))
        except (RedisError, OSError, FeatureError) as exc:
            print(f"error: cannot warm the features in Redis at {settings.redis_url} ({exc}); is the stack up?",
                  file=sys.stderr)
            return 1
        print(f"  {warmed.transactions:,} transactions and {warmed.labels:,} labels applied in "
              f"{warmed.seconds:.1f}s", file=sys.stderr)
    topics = {"tx": settings.topics.transactions, "bad": settings.topics.transactions, "label": settings.topics.labels}
    records = (
        OutboundRecord(topics[kind], key, value, counts_as_transaction=kind != "label") for kind, key, value in stream
    )
    print(f"simulating {args.count:,} transactions to {settings.kafka_bootstrap} "
          f"(rate {args.rate or 'max'}/s, seed {args.seed}, ids {prefix}-0 …)", file=sys.stderr)
    report = _run_produce(settings, records, args.rate, "simulate")
    print(json.dumps({**report.summary(), "id_prefix": prefix}))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from fraudstream.sources.replay import replay_records

    settings = load_settings()
    prefix = args.id_prefix if args.id_prefix is not None else run_prefix("replay")
    if (problem := prefix_problem(prefix)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        records = replay_records(args.input, settings.topics, limit=args.limit, start=args.start, days=args.days,
                                 id_prefix=prefix)
    except (FeatureError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    require_kafka(settings)
    shown = f"{prefix}-<id>" if prefix else "the file's own"
    print(f"replaying {args.input} to {settings.kafka_bootstrap} (rate {args.rate or 'max'}/s, ids {shown})",
          file=sys.stderr)
    report = _run_produce(settings, records, args.rate, "replay")
    print(json.dumps({**report.summary(), "id_prefix": prefix}))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser("worker", help="run a streaming worker (faust); several may run at once")
    worker.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    worker.add_argument("--batch-size", type=non_negative_int, default=0,
                        help="micro-batch size (default from settings: 256)")
    worker.set_defaults(handler=_worker)

    sim = commands.add_parser("simulate", help="send simulated card traffic (and its fraud labels) to Kafka")
    sim.add_argument("--count", type=positive_int, default=10_000, help="transactions to send (default 10000)")
    sim.add_argument("--rate", type=positive_float, default=None,
                     help="transactions per second (default: as fast as possible)")
    sim.add_argument("--seed", type=non_negative_int, default=0,
                     help="population seed (default 0, the population of the trainer's default history)")
    sim.add_argument("--shift-after", type=non_negative_int, default=None, metavar="K",
                     help="shift the distribution after K transactions (amounts ×2.5, more fraud) for drift")
    sim.add_argument("--label-delay-hours", type=non_negative_float, default=168.0,
                     help="label delay (default 168 h = 7 days)")
    sim.add_argument("--invalid-share", type=share, default=0.0, help="share of malformed records (DLQ demo)")
    sim.add_argument("--id-prefix", default=None,
                     help="transaction ids are PREFIX-0, PREFIX-1, … (default: 'sim-' and a token of this run, so "
                     "runs never reuse ids; give a prefix to send the same ids again)")
    sim.add_argument("--cards", type=positive_int, default=2000, help="cards of the population (default 2000)")
    sim.add_argument("--terminals", type=positive_int, default=4000, help="terminals of the population (default 4000)")
    sim.add_argument(
        "--warm-up-days", type=non_negative_float, default=WARM_UP_DAYS,
        help=f"first apply this many days of the population's history to the online features (Redis), not "
        f"scored, so the traffic is scored on warm state as a long-running worker's is (default {WARM_UP_DAYS:g}: "
        "the 30-day windows and the 7-day label delay; 0 = send only the traffic, from whatever state there is)",
    )
    sim.set_defaults(handler=_simulate)

    replay = commands.add_parser("replay", help="send historical transactions (and labels when known) in time order")
    replay.add_argument("--input", required=True, type=existing_file, help="history file (Parquet)")
    replay.add_argument("--mapping", default="fdh", choices=["fdh"], help="column mapping (default fdh)")
    replay.add_argument("--rate", type=positive_float, default=None, help="records per second (default: max)")
    replay.add_argument("--limit", type=positive_int, default=None, help="at most N transactions")
    replay.add_argument("--start", default=None, help="first day to replay, YYYY-MM-DD (default: the file's first)")
    replay.add_argument("--days", type=positive_float, default=None, help="replay this many days from --start")
    replay.add_argument("--id-prefix", default=None,
                        help="transaction ids become PREFIX-<id> (default: 'replay-' and a token of this run, so a "
                        "second replay of the same rows is new traffic; '' keeps the file's ids)")
    replay.set_defaults(handler=_replay)
