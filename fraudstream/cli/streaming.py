"""``fraudstream worker | simulate | replay``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterable

from aiokafka.errors import KafkaConnectionError

from features.errors import FeatureError
from fraudstream.settings import load_settings
from fraudstream.sources import prefix_problem, run_prefix
from fraudstream.sources.producer import OutboundRecord, ProduceReport, produce
from fraudstream.sources.simulator import SimulationConfig, Simulator, interleave_labels


def _run_produce(bootstrap: str, records: Iterable[OutboundRecord], rate: float | None, label: str
                 ) -> ProduceReport | None:
    try:
        return asyncio.run(produce(bootstrap, records, rate=rate, label=label))
    except KafkaConnectionError as exc:
        print(f"error: cannot reach Kafka at {bootstrap} ({exc}); is the stack up? 'fraudstream stack up'",
              file=sys.stderr)
        return None


def _worker(args: argparse.Namespace) -> int:
    from streams.worker import run_worker

    overrides: dict[str, object] = {}
    if args.batch_size:
        overrides["batch_max_size"] = args.batch_size
    return run_worker(load_settings(**overrides), loglevel=args.loglevel)


def _simulate(args: argparse.Namespace) -> int:
    settings = load_settings()
    prefix = args.id_prefix if args.id_prefix is not None else run_prefix("sim")
    if (problem := prefix_problem(prefix)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    simulator = Simulator(
        SimulationConfig(count=args.count, seed=args.seed, shift_after=args.shift_after,
                         label_delay_s=args.label_delay_hours * 3600, invalid_share=args.invalid_share,
                         id_prefix=prefix)
    )
    topics = {"tx": settings.topics.transactions, "bad": settings.topics.transactions, "label": settings.topics.labels}
    records = (
        OutboundRecord(topics[kind], key, value, counts_as_transaction=kind != "label")
        for kind, key, value in interleave_labels(simulator, end=time.time())
    )
    print(f"simulating {args.count:,} transactions to {settings.kafka_bootstrap} "
          f"(rate {args.rate or 'max'}/s, seed {args.seed}, ids {prefix}-0 …)", file=sys.stderr)
    report = _run_produce(settings.kafka_bootstrap, records, args.rate, "simulate")
    if report is None:
        return 1
    print(json.dumps({**report.summary(), "id_prefix": prefix}))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from fraudstream.sources.replay import replay_records

    settings = load_settings()
    if args.mapping != "fdh":
        print(f"error: unknown mapping {args.mapping!r}; supported: fdh", file=sys.stderr)
        return 2
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
    shown = f"{prefix}-<id>" if prefix else "the file's own"
    print(f"replaying {args.input} to {settings.kafka_bootstrap} (rate {args.rate or 'max'}/s, ids {shown})",
          file=sys.stderr)
    report = _run_produce(settings.kafka_bootstrap, records, args.rate, "replay")
    if report is None:
        return 1
    print(json.dumps({**report.summary(), "id_prefix": prefix}))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser("worker", help="run a streaming worker (faust); several may run at once")
    worker.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    worker.add_argument("--batch-size", type=int, default=0, help="micro-batch size (default from settings: 256)")
    worker.set_defaults(handler=_worker)

    sim = commands.add_parser("simulate", help="send simulated card traffic (and its fraud labels) to Kafka")
    sim.add_argument("--count", type=int, default=10_000, help="transactions to send (default 10000)")
    sim.add_argument("--rate", type=float, default=None, help="transactions per second (default: as fast as possible)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sim.add_argument("--shift-after", type=int, default=None, metavar="K",
                     help="shift the distribution after K transactions (amounts ×2.5, more fraud) for drift")
    sim.add_argument("--label-delay-hours", type=float, default=168.0, help="label delay (default 168 h = 7 days)")
    sim.add_argument("--invalid-share", type=float, default=0.0, help="share of malformed records (DLQ demo)")
    sim.add_argument("--id-prefix", default=None,
                     help="transaction ids are PREFIX-0, PREFIX-1, … (default: 'sim-' and a token of this run, so "
                     "runs never reuse ids; give a prefix to send the same ids again)")
    sim.set_defaults(handler=_simulate)

    replay = commands.add_parser("replay", help="send historical transactions (and labels when known) in time order")
    replay.add_argument("--input", required=True, help="history file (Parquet)")
    replay.add_argument("--mapping", default="fdh", help="column mapping (default fdh)")
    replay.add_argument("--rate", type=float, default=None, help="records per second (default: max)")
    replay.add_argument("--limit", type=int, default=None, help="at most N transactions")
    replay.add_argument("--start", default=None, help="first day to replay, YYYY-MM-DD (default: the file's first)")
    replay.add_argument("--days", type=float, default=None, help="replay this many days from --start")
    replay.add_argument("--id-prefix", default=None,
                        help="transaction ids become PREFIX-<id> (default: 'replay-' and a token of this run, so a "
                        "second replay of the same rows is new traffic; '' keeps the file's ids)")
    replay.set_defaults(handler=_replay)
