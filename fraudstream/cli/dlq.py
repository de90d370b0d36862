"""``fraudstream dlq``: what is in the dead-letter topic, and sending fixed records back to ``transactions``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.settings import Settings, load_settings
from fraudstream.cli.args import existing_file, positive_int
from fraudstream.cli.errors import CommandError
from fraudstream.cli.services import require_kafka

DLQ_EPILOG = """\
A typical repair:
  fraudstream dlq                                          # counts by reason and stage
  fraudstream dlq show --reason validation:amount:greater_than --max 3
  fraudstream dlq export --reason validation:amount:greater_than fixes.jsonl
  $EDITOR fixes.jsonl                                      # fix the records; put masked card numbers back
  fraudstream dlq resubmit fixes.jsonl --dry-run           # validated as the worker validates them
  fraudstream dlq resubmit fixes.jsonl                     # produced to transactions, scored by the workers

--reason takes a reason exactly as `fraudstream dlq` lists it, or a prefix ending in '*' ('validation:*').
Card numbers are masked in dead letters ("[redacted]" for card_id, '#' runs elsewhere): a record whose card
number is still masked is refused by resubmit.
"""


def _read_dlq(settings: Settings, emit: Callable[[dict[str, Any]], None]) -> int:
    """Every dead letter now in the topic (from the beginning to the current end)."""
    from fraudstream.topictools.tail import TailOptions, run_until_signalled, tail

    require_kafka(settings)
    options = TailOptions(topic=settings.topics.dead_letter, from_beginning=True, to_end=True)
    print(f"reading {options.topic} on {settings.kafka_bootstrap}", file=sys.stderr, flush=True)

    async def run(stop: Any) -> int:
        return await tail(settings.kafka, options, emit, stop=stop)

    count: int = run_until_signalled(run)
    return count


def _summary(args: argparse.Namespace) -> int:
    from fraudstream.topictools.dlq import DlqSummary

    settings = load_settings()
    summary = DlqSummary(settings.topics.dead_letter)
    _read_dlq(settings, summary.add)
    result = summary.as_dict()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['total']} dead letters in {summary.topic}"
          + (f" ({result['unreadable']} unreadable)" if result["unreadable"] else ""))
    if not result["total"]:
        return 0
    header = ("first (partition:offset, failed at)", "last")
    _table([("count", "stage", *header)] + [(str(s["count"]), s["stage"], _position(s["first"]), _position(s["last"]))
                                            for s in result["by_stage"]])
    _table([("count", "reason", "stage", *header)] + [
        (str(r["count"]), r["reason"], ",".join(r["stages"]), _position(r["first"]), _position(r["last"]))
        for r in result["by_reason"]])
    return 0


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for row in rows:
        print("  ".join(cell.rjust(widths[0]) if i == 0 else cell.ljust(widths[i])
                        for i, cell in enumerate(row)).rstrip())


def _position(position: dict[str, Any] | None) -> str:
    if position is None:
        return "-"
    at = (position["failed_at"] or "")[:19].replace("T", " ")
    return f"{position['partition']}:{position['offset']} {at}".strip()


def _show(args: argparse.Namespace) -> int:
    from fraudstream.topictools.dlq import decoded, reason_matches

    settings = load_settings()
    shown = [0]

    def emit(line: dict[str, Any]) -> None:
        letter = line.get("value")
        if shown[0] >= args.max or not isinstance(letter, dict):
            return
        if args.reason and not reason_matches(str(letter.get("reason", "")), args.reason):
            return
        print(json.dumps(decoded(line)), flush=True)
        shown[0] += 1

    _read_dlq(settings, emit)
    print(f"{shown[0]} dead letter{'s' if shown[0] != 1 else ''} shown", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from fraudstream.topictools.dlq import export_lines, reason_matches

    settings = load_settings()
    matching: list[dict[str, Any]] = []

    def emit(line: dict[str, Any]) -> None:
        letter = line.get("value")
        if isinstance(letter, dict) and reason_matches(str(letter.get("reason", "")), args.reason):
            matching.append(line)

    _read_dlq(settings, emit)
    if not matching:
        msg = f"no dead letters with reason {args.reason!r}; 'fraudstream dlq' lists the reasons"
        raise CommandError(msg)
    result = export_lines(matching)
    args.file.parent.mkdir(parents=True, exist_ok=True)
    args.file.write_bytes(b"".join(line + b"\n" for line in result.lines))
    print(f"wrote {len(result.lines)} record{'s' if len(result.lines) != 1 else ''} to {args.file}",
          file=sys.stderr)
    for partition, offset, why in result.skipped:
        print(f"  skipped the dead letter at {partition}:{offset}: {why} (see 'fraudstream dlq show')",
              file=sys.stderr)
    if result.masked:
        print(f"  {result.masked} of them have a masked card number: put the real one back before resubmitting",
              file=sys.stderr)
    print(f"next: edit {args.file}, then 'fraudstream dlq resubmit {args.file}'", file=sys.stderr)
    return 0


def _resubmit(args: argparse.Namespace) -> int:
    import asyncio

    from fraudstream.sources.producer import OutboundRecord, produce
    from fraudstream.topictools.dlq import check_resubmission

    settings = load_settings()
    try:
        lines = args.file.read_bytes().splitlines()
    except OSError as exc:
        msg = f"cannot read {args.file}: {exc.strerror}"
        raise CommandError(msg) from exc
    checked = check_resubmission(lines, now=datetime.now(UTC), max_bytes=settings.max_message_bytes,
                                 max_clock_skew_s=settings.max_clock_skew_s)
    bad = [c for c in checked if c.problem]
    for c in bad:
        print(f"{args.file}:{c.number}: {c.problem}", file=sys.stderr)
    good = [c for c in checked if c.transaction is not None]
    if not checked:
        msg = f"{args.file} has no records"
        raise CommandError(msg)
    if bad and not args.skip_invalid:
        msg = (f"{len(bad)} of {len(checked)} records would be rejected again; nothing was sent "
               "(fix them, or send the valid ones with --skip-invalid)")
        raise CommandError(msg)
    summary: dict[str, Any] = {"valid": len(good), "invalid": len(bad), "sent": 0,
                               "topic": settings.topics.transactions,
                               "transaction_ids": [c.transaction.transaction_id for c in good if c.transaction]}
    if args.dry_run or not good:
        print(f"{len(good)} records would be sent to {settings.topics.transactions} (dry run)"
              if args.dry_run else "no valid records to send", file=sys.stderr)
        print(json.dumps(summary))
        return 0 if not bad else 1
    require_kafka(settings)
    # Keyed by card id like every producer of `transactions`, so a card's records stay in order.
    records = [OutboundRecord(settings.topics.transactions, c.transaction.card_id.encode(), c.raw)
               for c in good if c.transaction is not None]
    report = asyncio.run(produce(settings.kafka, records, label="resubmit", quiet=True))
    summary["sent"] = report.sent
    print(f"sent {report.sent} records to {settings.topics.transactions}; follow them with "
          f"'fraudstream tail {settings.topics.scored}'", file=sys.stderr)
    print(json.dumps(summary))
    return 0 if not bad else 1


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dlq`` and its actions to the ``fraudstream`` parser."""
    dlq = commands.add_parser(
        "dlq", help="dead letters: counts by reason, show, export for repair, resubmit",
        description="The dead-letter topic (transactions-dlq): without an action, counts by reason and stage with "
        "the first and last dead letter of each reason.",
        epilog=DLQ_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dlq.add_argument("--json", action="store_true", help="print the counts as one JSON line")
    dlq.set_defaults(handler=_summary)
    actions = dlq.add_subparsers(dest="dlq_command", metavar="ACTION")

    summary = actions.add_parser("summary", help="counts by reason and stage (the default action)")
    summary.add_argument("--json", action="store_true", help="print the counts as one JSON line")
    summary.set_defaults(handler=_summary)

    show = actions.add_parser("show", help="dead letters as JSON lines, with the original record decoded")
    show.add_argument("--reason", default=None, help="only this reason (or prefix ending in '*')")
    show.add_argument("--max", type=positive_int, default=20, metavar="N", help="at most N (default 20)")
    show.set_defaults(handler=_show)

    export = actions.add_parser(
        "export", help="write the originals of one reason as JSON lines to edit",
        description="Writes the original record of every dead letter with the reason, one per line, for a person "
        "to fix. Binary or multi-line originals are skipped and listed.",
    )
    export.add_argument("--reason", required=True, help="the reason (or a prefix ending in '*')")
    export.add_argument("file", type=Path, metavar="FILE", help="JSON-lines file to write")
    export.set_defaults(handler=_export)

    resubmit = actions.add_parser(
        "resubmit", help="validate a file of fixed records and produce them to transactions",
        description="Each non-blank line is one transaction as JSON. Every line is validated as the worker "
        "validates it first; if any would be rejected again nothing is sent (exit 1) unless --skip-invalid. "
        "The last stdout line is a JSON summary (valid, invalid, sent, transaction_ids).",
    )
    resubmit.add_argument("file", type=existing_file, metavar="FILE", help="JSON-lines file of fixed transactions")
    resubmit.add_argument("--dry-run", action="store_true", help="only validate; send nothing")
    resubmit.add_argument("--skip-invalid", action="store_true",
                          help="send the valid lines even if others are invalid (exit 1 still reports them)")
    resubmit.set_defaults(handler=_resubmit)
