"""``fraudstream stack up|down|status``."""

from __future__ import annotations

import argparse
import json
import sys

from config.settings import load_settings
from fraudstream.cli.args import positive_float
from fraudstream.stack import LocalStack, StackError


def local_stack(*, redis_cluster: int = 0, redis_replicas: int = 0, brokers: int | None = None) -> LocalStack:
    """The stack of this home; ``brokers`` None: as many as it has now (down and status act on what runs)."""
    settings = load_settings()
    if brokers is None:
        brokers = len(LocalStack(settings.home).load().brokers)
    return LocalStack(settings.home, topics=settings.topics, transactions_partitions=settings.transactions_partitions,
                      redis_cluster=redis_cluster, redis_replicas=redis_replicas, brokers=brokers)


def _up(args: argparse.Namespace) -> int:
    if args.redis_cluster and args.redis_cluster < 3:
        print("error: --redis-cluster needs at least 3 primaries", file=sys.stderr)
        return 2
    if args.brokers < 1 or args.brokers == 2:
        print("error: --brokers is 1 or at least 3 (a KRaft quorum of 2 survives no loss)", file=sys.stderr)
        return 2
    stack = local_stack(redis_cluster=args.redis_cluster, redis_replicas=args.replicas, brokers=args.brokers)
    try:
        state = stack.up(timeout_s=args.timeout)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cluster = (
        f" (cluster of {args.redis_cluster} primaries, {args.replicas} replica(s) each)" if args.redis_cluster else ""
    )
    brokers = f" ({args.brokers} brokers, topics with 3 replicas, min.insync.replicas 2)" if args.brokers > 1 else ""
    print(f"stack up: Kafka {state.bootstrap}{brokers}, Redis {state.redis_url}{cluster}; "
          f"settings in {stack.env_file}")
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
            for node in info.get("brokers") or []:  # type: ignore[attr-defined]  # a multi-broker Kafka
                node_state = "healthy" if node["healthy"] else ("running" if node["running"] else "stopped")
                print(f"  kafka node {node['node_id']} {node_state:8} 127.0.0.1:{node['port']}  pid={node['pid']}")
    return 0 if all(info["healthy"] for info in status.values()) else 3


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("stack", help="local Kafka (KRaft) + Redis: up, down, status")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start Kafka and Redis on free loopback ports; write .fraudstream/stack.env")
    up.add_argument("--timeout", type=positive_float, default=90.0, help="seconds to wait for health (default 90)")
    up.add_argument("--redis-cluster", type=int, default=0, metavar="N",
                    help="a Redis Cluster of N (>= 3) primaries instead of one redis-server (default: single node)")
    up.add_argument("--replicas", type=int, default=0, metavar="R",
                    help="replicas per cluster primary (with --redis-cluster; default 0)")
    up.add_argument("--brokers", type=int, default=1, metavar="M",
                    help="Kafka brokers: 1 (default) or M >= 3 KRaft nodes, topics with 3 replicas and "
                    "min.insync.replicas 2")
    up.set_defaults(handler=_up)
    actions.add_parser("down", help="stop both services; no process is left behind").set_defaults(handler=_down)
    status = actions.add_parser("status", help="show pids, addresses and health (exit 3 if not healthy)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)
