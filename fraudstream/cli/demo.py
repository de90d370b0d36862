"""``fraudstream demo``: the main job end to end."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fraudstream.cli.args import non_negative_float, positive_float, positive_int, share
from fraudstream.sources.warmup import WARM_UP_DAYS
from fraudstream.stack import StackError


def _demo(args: argparse.Namespace) -> int:
    from fraudstream.demo import DemoError, run_demo
    from fraudstream.demo_report import print_summary, summary_json

    try:
        report = run_demo(args.transactions, keep_stack=args.keep_stack, invalid_share=args.invalid_share,
                          rate=args.rate, warm_up_days=args.warm_up_days)
    except (StackError, DemoError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_summary(report)
    if args.summary_json:
        path = Path(args.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary_json(report), indent=2) + "\n")
        print(f"\nsummary written to {path}")
    return 0 if report.complete and report.scored > 0 else 1


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo", help="the main job end to end: stack, model, worker, traffic, summary",
        description="Starts the local stack if needed, trains a first model on the simulator's history if the "
        "repository has none, starts a worker, warms its features with the simulated population's past, offers "
        "simulated traffic (a backlog, then a steady rate the worker sustains) and prints what happened.",
    )
    demo.add_argument("--transactions", type=positive_int, default=20_000,
                      help="simulated transactions (default 20000)")
    demo.add_argument("--summary-json", default=None, metavar="PATH", help="also write the summary as JSON")
    demo.add_argument("--rate", type=positive_float, default=None, metavar="TPS",
                      help="offer every transaction at this rate (default: a backlog of a quarter of the traffic, at "
                      "most 5000, offered at once to measure the worker's capacity here, then the rest at half that "
                      "rate; the summary shows both phases)")
    demo.add_argument("--warm-up-days", type=non_negative_float, default=WARM_UP_DAYS,
                      help=f"days of the population's history applied to the online features before the traffic "
                      f"(default {WARM_UP_DAYS:g}: the 30-day windows and the 7-day label delay)")
    demo.add_argument("--invalid-share", type=share, default=0.005,
                      help="share of malformed records, to show the dead-letter path (default 0.005)")
    demo.add_argument("--keep-stack", action="store_true", help="leave a stack the demo started running")
    demo.set_defaults(handler=_demo)
