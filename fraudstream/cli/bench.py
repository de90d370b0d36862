"""``fraudstream bench <name>``: benchmarks. Each sub-command is one ``_register_<name>`` function below
(``scoring`` here; ``e2e`` is added the same way, with one more line in ``register``). Each prints progress
to stderr and, with ``--json``, its JSON result as the last stdout line."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TypeAlias

    BenchCommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` and its sub-commands to the ``fraudstream`` parser."""
    bench = commands.add_parser("bench", help="run a benchmark and report its figures")
    benches: BenchCommands = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    _register_scoring(benches)


def _register_scoring(benches: BenchCommands) -> None:
    from scoring.bench import add_arguments

    parser = benches.add_parser(
        "scoring",
        help="gRPC micro-batched vs one Predict per transaction (in-process servicer); local backend rows/s",
    )
    add_arguments(parser)
    parser.set_defaults(handler=_scoring)


def _scoring(args: argparse.Namespace) -> int:
    from scoring.bench import main

    return main(args)
