"""``fraudstream`` console script: one sub-command module per concern, each with ``register()``.

Entry points stay thin: they parse arguments, build ``Settings`` once and call into the packages.
Progress goes to stderr; a ``--json`` command's last stdout line is its JSON result.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fraudstream.cli import bench, demo, features, monitoring, reliability, stack, streaming, training


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fraudstream",
        description="Real-time fraud scoring: Kafka → faust feature agents (Redis) → TensorFlow → scores.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Settings come from FRAUD_* environment variables and .fraudstream/stack.env "
        "(written by 'fraudstream stack up').",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (stack, demo, streaming, features, training, monitoring, bench, reliability):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
