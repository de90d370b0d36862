"""``fraudstream bench <name>``: benchmarks. Each sub-command is one ``_register_<name>`` function below
(``scoring`` here; ``e2e`` is added the same way, with one more line in ``register``). Each prints progress
to stderr and, with ``--json``, its JSON result as the last stdout line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fraudstream.cli.args import positive_float, positive_int

if TYPE_CHECKING:
    from typing import TypeAlias

    from fraudstream.stack import LocalStack

    BenchCommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` and its sub-commands to the ``fraudstream`` parser."""
    bench = commands.add_parser("bench", help="run a benchmark and report its figures")
    benches: BenchCommands = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    _register_scoring(benches)
    _register_e2e(benches)
    _register_capacity(benches)
    _register_soak(benches)


def _register_scoring(benches: BenchCommands) -> None:
    from fraudstream.bench.scoring import add_arguments

    parser = benches.add_parser(
        "scoring",
        help="gRPC micro-batched vs one Predict per transaction (in-process servicer); local backend rows/s",
    )
    add_arguments(parser)
    parser.set_defaults(handler=_scoring)


def _scoring(args: argparse.Namespace) -> int:
    from fraudstream.bench.scoring import main

    return main(args)


def _register_capacity(benches: BenchCommands) -> None:
    from fraudstream.bench.capacity import RATES

    parser = benches.add_parser(
        "capacity", help="cores, workers, Redis shards, brokers and partitions for target rates, from the CPU per "
        "transaction a 'bench e2e --json' run measured"
    )
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--from", dest="source", metavar="E2E_JSON",
                       help="a 'bench e2e --json' result (its last line is read)")
    given.add_argument("--costs", metavar="worker=US,redis=US,kafka=US",
                       help="CPU µs per transaction given by hand (figures of an earlier run, documented)")
    parser.add_argument("--at", choices=("saturation", "fixed_rate", "fit"), default="saturation",
                        help="the CPU per transaction at saturation (default: all of it counted as marginal, an "
                        "upper bound below saturation) or at the run's fixed --rate; or fit fixed + marginal costs "
                        "over the run's phases")

    parser.add_argument("--rates", default=",".join(str(int(r)) for r in RATES),
                        help="target rates in tx/s (default 1000,10000,50000)")
    parser.add_argument("--utilisation", type=positive_float, default=0.6, help="share of a core per process (0.6)")
    parser.add_argument("--replication-factor", type=positive_int, default=3, help="Kafka replication factor (3)")
    parser.add_argument("--broker-cores", type=positive_int, default=4, help="cores of one broker (4)")
    parser.add_argument("--json", action="store_true", help="print the plans as JSON (last line)")
    parser.set_defaults(handler=_capacity)


def _capacity(args: argparse.Namespace) -> int:
    from fraudstream.bench.capacity import main

    return main(args)


def _register_e2e(benches: BenchCommands) -> None:
    parser = benches.add_parser(
        "e2e", help="whole pipeline: saturation throughput against the echo ceiling, latency at shares of it and the "
        "Kafka round trip, speed-up over a naive agent"
    )
    parser.add_argument("--transactions", type=positive_int, default=60_000, help="saturation backlog (default 60000)")
    parser.add_argument("--naive-transactions", type=positive_int, default=3_000,
                        help="backlog of each per-record baseline, naive and strict (default 3000)")
    parser.add_argument("--rate", type=positive_float, default=5_000.0,
                        help="a fixed offered load for latency, besides the shares of capacity (default 5000/s)")
    parser.add_argument("--seconds", type=positive_float, default=10.0,
                        help="duration of each fixed-load phase and of the Kafka round trip (default 10)")
    parser.add_argument("--sweep", default="", help="extra offered loads, e.g. 1000,2500,7500,10000")
    parser.add_argument("--batch", type=positive_int, default=512, help="worker micro-batch size (default 512)")
    parser.add_argument("--scale-out", action="store_true",
                        help="also measure two workers sharing the partitions (batched pipeline and naive agent)")
    parser.add_argument("--plot", default=None, metavar="PNG", help="with --sweep: plot throughput/latency vs load")
    parser.add_argument("--share-plot", default=None, metavar="PNG",
                        help="plot latency against the offered share of the run's saturation throughput")
    parser.add_argument("--redis-cluster", type=int, default=0, metavar="N",
                        help="run on a local Redis Cluster of N (>= 3) primaries, started through 'stack up "
                        "--redis-cluster N' when no stack runs; reports CPU per transaction per Redis node")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (last line)")
    parser.set_defaults(handler=_e2e)


def _e2e(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import sys

    from config.settings import load_settings
    from fraudstream.bench.e2e import BenchOptions, run_bench
    from fraudstream.stack import LocalStack

    settings = load_settings()
    if args.redis_cluster and args.redis_cluster < 3:
        print("error: --redis-cluster needs at least 3 primaries", file=sys.stderr)
        return 2
    stack = LocalStack(settings.home, topics=settings.topics, transactions_partitions=settings.transactions_partitions,
                       redis_cluster=args.redis_cluster)
    if args.redis_cluster and (problem := _other_redis_shape(stack, args.redis_cluster)):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    started = stack.ensure_up("[bench e2e] starting the local stack")
    if started:
        settings = load_settings()
    options = BenchOptions(
        saturation_count=args.transactions, naive_count=args.naive_transactions, fixed_rate=args.rate,
        fixed_seconds=args.seconds, sweep=tuple(float(x) for x in args.sweep.split(",") if x), batch=args.batch,
        scale_out=args.scale_out,
    )
    try:
        result = asyncio.run(run_bench(settings, options))
    finally:
        if started:
            stack.down()
    if args.plot and result["sweep"]:
        from fraudstream.bench.e2e import plot_sweep

        plot_sweep(result, args.plot)
        print(f"[bench e2e] plot written to {args.plot}", file=sys.stderr)
    if args.share_plot:
        from fraudstream.bench.e2e import plot_shares

        plot_shares(result, args.share_plot)
        print(f"[bench e2e] plot written to {args.share_plot}", file=sys.stderr)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 1 if result["lost"] else 0  # a benchmark that lost transactions measured a broken pipeline


def _other_redis_shape(stack: LocalStack, primaries: int) -> str:
    """Why a running stack cannot serve a run on ``primaries`` cluster primaries ('' when it can, or when
    no stack runs: the bench then starts one of that shape and stops it after). A running stack of another
    shape is someone's: the bench does not swap its Redis."""
    from fraudstream.bench.components import redis_shape

    if not any(service["running"] for service in stack.status().values()):
        return ""
    shape = redis_shape(stack.home)
    if shape == primaries:
        return ""
    running = "one redis-server" if shape == 1 else f"a Redis Cluster of {shape} primaries"
    return (f"the local stack runs {running}, not a cluster of {primaries}: 'fraudstream stack down' first, or "
            f"'fraudstream stack up --redis-cluster {primaries}'")
def _register_soak(benches: BenchCommands) -> None:
    from fraudstream.cli.args import share

    parser = benches.add_parser(
        "soak", help="a long run at a share of capacity on a stack of its own: worker RSS, Redis memory, consumer "
        "lag and latency per minute, and a verdict on what grows"
    )
    parser.add_argument("--minutes", type=positive_float, default=30.0, help="how long to offer the load (default 30)")
    parser.add_argument("--interval-s", type=positive_float, default=60.0, help="seconds between samples (default 60)")
    parser.add_argument("--rate", type=positive_float, default=None,
                        help="transactions per second to offer (default: --share of the saturation measured first)")
    parser.add_argument("--share", type=share, default=0.5, help="share of the saturation throughput (default 0.5)")
    parser.add_argument("--saturation-transactions", type=positive_int, default=20_000,
                        help="backlog of the saturation measurement (default 20000)")
    parser.add_argument("--batch", type=positive_int, default=512, help="worker micro-batch size (default 512)")
    parser.add_argument("--dedup-horizon-s", type=positive_float, default=60.0,
                        help="the worker's dedup_horizon_s: id records live this long (default 60, the minimum)")
    parser.add_argument("--home", type=Path, default=None,
                        help="where the soak's own stack lives (default <FRAUD_HOME>/soak); its data is removed after")
    parser.add_argument("--keep-data", action="store_true", help="keep the soak stack's Kafka and Redis data")
    parser.add_argument("--plot", default=None, metavar="PNG", help="plot RSS, Redis memory, lag and latency")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (last line)")
    parser.set_defaults(handler=_soak)


def _soak(args: argparse.Namespace) -> int:
    import json
    import sys

    from config.settings import default_home
    from fraudstream.bench.soak import SoakOptions, plot, run, table

    if args.dedup_horizon_s < 60:  # the settings refuse less (config/settings.py): the worker would not start
        print("error: --dedup-horizon-s must be at least 60", file=sys.stderr)
        return 2
    options = SoakOptions(
        minutes=args.minutes, interval_s=args.interval_s, rate=args.rate, share=args.share,
        saturation_count=args.saturation_transactions, batch=args.batch, dedup_horizon_s=args.dedup_horizon_s,
        keep_data=args.keep_data,
    )
    result = run(options, args.home or default_home() / "soak")
    if args.plot:
        plot(result, args.plot)
        print(f"[bench soak] plot written to {args.plot}", file=sys.stderr)
    print(json.dumps(result) if args.json else table(result))
    return 0 if result["ok"] else 1  # something grew, or a transaction was neither scored nor dead-lettered
