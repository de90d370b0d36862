"""``fraudstream tail TOPIC`` and ``fraudstream schemas export DIR``: tools for the consumers of the topics."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from config.settings import load_settings
from fraudstream.cli.args import positive_int
from fraudstream.cli.services import require_kafka

TAIL_EPILOG = """\
Each line is one record as JSON: topic, partition, offset, timestamp (UTC), key, value. A JSON value is
embedded as JSON (value_format "json"), other text as a string ("text"), binary as base64 ("base64").
Card numbers are masked as in dead letters. Progress and the final count go to stderr.

examples:
  fraudstream tail scored-transactions                      # new scores as they are published (Ctrl-C stops)
  fraudstream tail transactions-dlq --from-beginning --max 5
  fraudstream tail drift-alerts --from-beginning --to-end | jq .value.subject
"""


def _tail(args: argparse.Namespace) -> int:
    from fraudstream.topictools.tail import TailOptions, dumps_line, run_until_signalled, tail

    settings = load_settings()
    require_kafka(settings)
    options = TailOptions(topic=args.topic, from_beginning=args.from_beginning, max_records=args.max,
                          to_end=args.to_end)
    where = "the beginning" if args.from_beginning else "the end (new records only)"
    print(f"reading {args.topic} on {settings.kafka_bootstrap} from {where}"
          + (f", at most {args.max} records" if args.max else ""), file=sys.stderr, flush=True)

    def emit(record: dict[str, Any]) -> None:
        sys.stdout.write(dumps_line(record) + "\n")
        sys.stdout.flush()

    async def run(stop: asyncio.Event) -> int:
        return await tail(settings.kafka, options, emit, stop=stop)

    try:
        count = run_until_signalled(run)
    except BrokenPipeError:  # `fraudstream tail … | head -3`: the reader has all it wanted
        sys.stderr.close()
        return 0
    print(f"{count} record{'s' if count != 1 else ''} read", file=sys.stderr)
    return 0


def _schemas_export(args: argparse.Namespace) -> int:
    from schemas.export import export_json_schemas

    for path in export_json_schemas(args.directory):
        print(path)
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``tail`` and ``schemas`` to the ``fraudstream`` parser."""
    tail = commands.add_parser(
        "tail", help="print a topic's records as JSON lines",
        description="Print the records of a Kafka topic as JSON lines, by default the new ones from now on.",
        epilog=TAIL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tail.add_argument("topic", metavar="TOPIC", help="topic name, e.g. scored-transactions or transactions-dlq")
    tail.add_argument("--from-beginning", action="store_true",
                      help="start at the oldest record kept (default: the end, i.e. only new records)")
    tail.add_argument("--max", type=positive_int, default=None, metavar="N", help="stop after N records")
    tail.add_argument("--to-end", action="store_true",
                      help="stop at the end the topic had when the command started (read what is there, then exit)")
    tail.set_defaults(handler=_tail)

    schemas = commands.add_parser("schemas", help="JSON Schemas of the topics' records")
    actions = schemas.add_subparsers(dest="schemas_command", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export", help="write the JSON Schema of every topic's records into DIR",
        description="Writes <record>.schema.json (JSON Schema 2020-12 with $schema and $id) for every record "
        "type and index.json mapping each topic to its schema. Needs no running stack.",
    )
    export.add_argument("directory", type=Path, metavar="DIR", help="target directory (created if missing)")
    export.set_defaults(handler=_schemas_export)
