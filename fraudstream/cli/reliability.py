"""``fraudstream features rebuild``: restore the online feature state from the topics (streams/rebuild.py).

Registered under the ``features`` command: when another module already added ``features`` with its own
sub-commands, ``rebuild`` joins them; otherwise this module creates ``features`` itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from fraudstream.cli.args import non_negative_float, positive_int


def _rebuild(args: argparse.Namespace) -> int:
    # Imported here so that `fraudstream --help` stays fast.
    from config.settings import load_settings
    from fraudstream.cli.services import require_kafka, require_redis
    from streams.rebuild import RebuildRefused, rebuild

    settings = load_settings()
    require_kafka(settings)
    require_redis(settings)
    prefix = settings.feature_key_prefix

    def progress(done: int, total: int) -> None:
        if done == total or done % 50_000 < args.batch_size:
            print(f"  rebuild: {done:,}/{total:,} transactions applied", file=sys.stderr)

    print(f"rebuilding online features under '{prefix}:*' from {settings.topics.transactions} and "
          f"{settings.topics.labels} on {settings.kafka_bootstrap}", file=sys.stderr)
    try:
        report = asyncio.run(rebuild(settings, replace=args.replace, verify=args.verify,
                                     batch_size=args.batch_size, key_prefix=prefix, progress=progress))
    except RebuildRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(report.as_dict()))
    if args.verify and report.max_rel_diff is not None and report.max_rel_diff > args.tolerance:
        diff = report.max_rel_diff
        print(f"error: rebuilt features differ from the offline engine by {diff:g}", file=sys.stderr)
        return 1
    return 0


def _features_subcommands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    parser = commands.choices.get("features")
    if parser is None:
        parser = commands.add_parser("features", help="online/offline feature tools")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="features_command", metavar="SUBCOMMAND", required=True)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``features rebuild`` to the ``fraudstream`` parser."""
    sub = _features_subcommands(commands)
    rebuild = sub.add_parser(
        "rebuild", help="restore the Redis feature state from the transactions and fraud-labels topics",
        description="Replays transactions and fraud-labels from their beginning through the online engine. "
        "Stop the workers first. Refuses to run over existing state unless --replace is given.",
    )
    rebuild.add_argument("--replace", action="store_true",
                         help="purge the existing online state under the key prefix, then rebuild")
    rebuild.add_argument("--verify", action="store_true",
                         help="also compute the offline engine on the same history and report the difference")
    rebuild.add_argument("--tolerance", type=non_negative_float, default=1e-6,
                         help="with --verify: largest relative difference accepted")
    rebuild.add_argument("--batch-size", type=positive_int, default=2000, help="transactions per Redis round trip")
    rebuild.set_defaults(handler=_rebuild)
