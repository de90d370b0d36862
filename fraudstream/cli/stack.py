"""``fraudstream stack up|down|status``."""

from __future__ import annotations

import argparse
import json
import sys

from config.settings import load_settings
from fraudstream.cli.args import positive_float
from fraudstream.stack import LocalStack, StackError


def local_stack() -> LocalStack:
    settings = load_settings()
    return LocalStack(settings.home, topics=settings.topics, transactions_partitions=settings.transactions_partitions)


def _up(args: argparse.Namespace) -> int:
    stack = local_stack()
    try:
        state = stack.up(timeout_s=args.timeout)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"stack up: Kafka {state.bootstrap}, Redis {state.redis_url}; settings in {stack.env_file}")
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = local_stack().down()
    print("stopped " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = local_stack().status()
    if args.json:
        print(json.dumps(status))
    else:
        for name, info in status.items():
            where = info.get("bootstrap") or info.get("url") or "-"
            state = "healthy" if info["healthy"] else ("running" if info["running"] else "stopped")
            print(f"{name:6} {state:8} {where}  pid={info['pid']}  log={info['log']}")
    return 0 if all(info["healthy"] for info in status.values()) else 3


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("stack", help="local Kafka (KRaft) + Redis: up, down, status")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start Kafka and Redis on free loopback ports; write .fraudstream/stack.env")
    up.add_argument("--timeout", type=positive_float, default=90.0, help="seconds to wait for health (default 90)")
    up.set_defaults(handler=_up)
    actions.add_parser("down", help="stop both services; no process is left behind").set_defaults(handler=_down)
    status = actions.add_parser("status", help="show pids, addresses and health (exit 3 if not healthy)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)
