"""``fraudstream features …``: parity between the online and offline engines, and the catalogue."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time

from fraudstream.cli.args import existing_file, positive_int


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's sub-commands to the ``fraudstream`` parser."""
    parser = commands.add_parser("features", help="feature platform: parity, catalogue")
    sub = parser.add_subparsers(dest="features_command", metavar="SUBCOMMAND", required=True)

    parity = sub.add_parser(
        "parity",
        help="run a history through the online (Redis) and offline engines and compare",
        description="Prints progress to stderr and, as the last stdout line, JSON with rows, "
        "max_abs_diff, max_rel_diff and worst_feature. Exits 1 when the relative difference "
        "|a-b|/max(1,|a|,|b|) exceeds 1e-6. The online run uses its own key prefix and deletes only "
        "its own keys afterwards.",
    )
    parity.add_argument("--input", required=True, type=existing_file, help="history file (fdh Parquet)")
    parity.add_argument("--mapping", choices=["fdh"], default="fdh", help="how to read the file")
    parity.add_argument("--limit", type=positive_int, default=None, help="only the first N transactions")
    parity.add_argument("--redis-url", default=None, help="default: settings (FRAUD_REDIS_URL / stack.env)")
    parity.add_argument("--redis-cluster", action=argparse.BooleanOptionalAction, default=None,
                        help="the Redis URL is a node of a Redis Cluster (default: settings, FRAUD_REDIS_CLUSTER)")
    parity.add_argument("--batch-size", type=positive_int, default=2000, help="transactions per pipelined round trip")
    parity.set_defaults(handler=_parity)

    catalogue = sub.add_parser("catalogue", help="print the feature catalogue (markdown)")
    catalogue.set_defaults(handler=_catalogue)


def _catalogue(args: argparse.Namespace) -> int:
    from features.catalogue import render_catalogue

    sys.stdout.write(render_catalogue())
    return 0


def _parity(args: argparse.Namespace) -> int:
    # A FeatureError (an unreadable history, Redis going away) is explained by fraudstream.cli.main.
    return asyncio.run(_parity_async(args))


async def _parity_async(args: argparse.Namespace) -> int:
    from config.redis import RedisConnection
    from features.history import load_fdh
    from features.parity import run_parity

    if args.redis_url is not None:
        connection = RedisConnection(url=args.redis_url, cluster=bool(args.redis_cluster))
    else:
        from config.settings import load_settings
        from fraudstream.cli.services import require_redis

        settings = load_settings()
        require_redis(settings)
        connection = settings.redis
        if args.redis_cluster is not None:
            connection = dataclasses.replace(connection, cluster=args.redis_cluster)
    started = time.perf_counter()
    print(f"loading {args.input} (mapping {args.mapping}) …", file=sys.stderr)
    transactions, labels = load_fdh(args.input, limit=args.limit)
    print(f"{len(transactions):,} transactions, {int(labels['is_fraud'].sum()):,} fraud labels", file=sys.stderr)
    step = max(1, len(transactions) // 20)
    last = [0]

    def progress(done: int, total: int) -> None:
        if done - last[0] >= step or done == total:
            last[0] = done
            rate = done / max(time.perf_counter() - started, 1e-9)
            print(f"online: {done:,}/{total:,} ({rate:,.0f} tx/s incl. loading)", file=sys.stderr)

    # No socket timeouts, as before: a parity run's batches are large and nothing else waits on them.
    client = connection.client(socket_connect_timeout=None, socket_timeout=None, health_check_interval=0)
    try:
        result = await run_parity(client, transactions, labels, batch_size=args.batch_size, progress=progress)
    finally:
        await client.aclose()
    verdict = "OK" if result.ok else "ABOVE TOLERANCE"
    print(
        f"parity {verdict}: max rel diff {result.max_rel_diff:.3g} ({result.worst_feature}), "
        f"online {result.online_s:.1f}s, offline {result.offline_s:.2f}s",
        file=sys.stderr,
    )
    print(json.dumps(result.as_dict()))
    return 0 if result.ok else 1
