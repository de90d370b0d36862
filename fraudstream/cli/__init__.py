"""``fraudstream`` console script: one sub-command module per concern, each with ``register()``.

Entry points stay thin: they parse arguments, build ``Settings`` once and call into the packages.
Progress goes to stderr; a ``--json`` command's last stdout line is its JSON result. Errors are turned into
one line in ``main()`` (``fraudstream/cli/errors.py``): exit 2 for usage errors, 1 for failures, 130 on
Ctrl-C; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fraudstream.cli import (
    bench,
    demo,
    dlq,
    features,
    monitoring,
    reliability,
    stack,
    streaming,
    topics,
    training,
)
from fraudstream.cli.errors import explain

DEBUG_HELP = "show the traceback of an error instead of a one-line message"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fraudstream",
        description="Real-time fraud scoring: Kafka → faust feature agents (Redis) → TensorFlow → scores.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Settings come from FRAUD_* environment variables and .fraudstream/stack.env "
        "(written by 'fraudstream stack up'). Exit codes: 0 ok, 1 failure, 2 usage error, 130 interrupted.",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (stack, demo, streaming, topics, dlq, features, training, monitoring, bench, reliability):
        module.register(commands)
    _accept_debug_everywhere(commands)
    return parser


def _accept_debug_everywhere(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``--debug`` is global, and may also follow the sub-command (``fraudstream worker --debug``)."""
    for sub in set(commands.choices.values()):
        if not any("--debug" in action.option_strings for action in sub._actions):
            sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_debug_everywhere(action)


def _settings_for_messages() -> object:
    from config.settings import load_settings

    try:
        return load_settings()
    except Exception:  # the settings themselves may be what is wrong
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed by argparse)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        from config.settings import Settings

        settings = _settings_for_messages()
        explained = explain(exc, settings if isinstance(settings, Settings) else None)
        if explained is None:
            print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
            return 1
        print(f"error: {explained.message}", file=sys.stderr)
        return explained.exit_code
    return code


if __name__ == "__main__":
    sys.exit(main())
