"""What WAIT costs (``redis_wait_replicas``, features/replication.py): a worker's Redis path per micro-batch
(claim the ids, apply and read the features, store the results: three round trips, as the worker does) on
a Redis Cluster, without WAIT and with WAIT N, in alternating rounds over consecutive slices of one history
(the same keys and state for both).

    .venv/bin/python -m fraudstream.bench.durability --input 'sim:60000?seed=1' --json [--replicas 1]

Without ``--redis-url`` it starts its own cluster with the stack's code (3 primaries, ``--replicas`` each, AOF
on as ``stack up --redis-cluster 3`` runs them) in a temporary directory and stops it. Reports, per mode, the
batch latency (p50, p99 over all batches of its rounds) and the rate (median over its rounds), and the
differences; and WAIT alone (``round_trip``): SET versus SET + WAIT on one primary's connection, alternating.
Progress goes to stderr; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from redis.asyncio.cluster import RedisCluster

from config.redis import RedisConnection
from features.ids import Claim, TransactionIds
from features.online import RedisFeatureStore
from features.parity import transaction_events
from fraudstream.stack.redis_cluster import LocalRedisCluster
from training.dataset import load_history


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(url: str, cluster: bool, args: argparse.Namespace) -> dict[str, Any]:
    transactions, _ = load_history(args.input, "fdh", limit=args.rounds * args.rows + args.warm)
    events = transaction_events(transactions.sort_values("event_time", kind="stable").reset_index(drop=True))
    client = RedisConnection(url=url, cluster=cluster).client()
    if isinstance(client, RedisCluster):
        await client.initialize()
    prefix = f"bench-wait-{uuid.uuid4().hex[:8]}"
    modes = {0: "wait_0", args.wait: f"wait_{args.wait}"}
    stores = {n: RedisFeatureStore(client, key_prefix=prefix, wait_replicas=n, wait_timeout_ms=args.timeout_ms)
              for n in modes}
    ids = {n: TransactionIds(client, key_prefix=prefix, wait_replicas=n, wait_timeout_ms=args.timeout_ms)
           for n in modes}
    latencies: dict[int, list[float]] = {n: [] for n in modes}
    rates: dict[int, list[float]] = {n: [] for n in modes}
    try:
        for n in modes:
            await stores[n].load_scripts()
            await ids[n].load_scripts()

        async def batch(n: int, chunk: list[Any]) -> None:
            claims = [Claim(e.transaction_id, "h", "transactions", 0, i) for i, e in enumerate(chunk)]
            await ids[n].claim(claims)
            await stores[n].apply_and_read(chunk)
            await ids[n].record_outcomes([(e.transaction_id, b'{"score":0.1}') for e in chunk])

        position = 0
        for i in range(0, args.warm, args.batch):  # state and connections warm, not measured
            await batch(0, events[i : i + args.batch])
        position = args.warm
        for round_no in range(args.rounds):
            n = args.wait if round_no % 2 else 0  # alternating: 0, N, 0, N, ...
            rows = events[position : position + args.rows]
            position += args.rows
            started = time.perf_counter()
            for i in range(0, len(rows), args.batch):
                t0 = time.perf_counter()
                await batch(n, rows[i : i + args.batch])
                latencies[n].append((time.perf_counter() - t0) * 1000)
            rates[n].append(len(rows) / (time.perf_counter() - started))
            log(f"round {round_no + 1}/{args.rounds} ({modes[n]}): {rates[n][-1]:,.0f} tx/s")
    finally:
        await stores[0].purge()
        await ids[0].purge()
        for n in modes:
            await stores[n].close()
        await client.aclose()
    result: dict[str, Any] = {"batch": args.batch, "rows_per_round": args.rows, "rounds": args.rounds,
                              "wait_timeout_ms": args.timeout_ms, "cpus": os.cpu_count(),
                              "load_avg_1m": os.getloadavg()[0]}
    for n, name in modes.items():
        result[name] = {"p50_ms": round(percentile(latencies[n], 0.5), 2),
                        "p99_ms": round(percentile(latencies[n], 0.99), 2),
                        "tx_per_s": round(statistics.median(rates[n])), "rounds_tx_per_s": [round(r) for r in rates[n]]}
    zero, wait = result["wait_0"], result[modes[args.wait]]
    result["p50_added_ms"] = round(wait["p50_ms"] - zero["p50_ms"], 2)
    result["p99_added_ms"] = round(wait["p99_ms"] - zero["p99_ms"], 2)
    result["rate_ratio"] = round(wait["tx_per_s"] / zero["tx_per_s"], 3)
    return result


async def round_trips(url: str, args: argparse.Namespace) -> dict[str, float]:
    """WAIT alone: ``--probes`` round trips of ``SET marker`` and of ``SET marker; WAIT n t`` on one primary's
    connection, alternating one by one; medians and p99 in microseconds."""
    client = RedisConnection(url=url, cluster=True).client()
    assert isinstance(client, RedisCluster)
    await client.initialize()
    node = client.get_primaries()[0]
    conn = node.acquire_connection()
    run = uuid.uuid4().hex[:8]
    key = next(k for i in range(100_000)  # a key this primary owns
               if (o := client.get_node_from_key(k := f"bench-wait:{run}:{i}")) and o.name == node.name)
    times: dict[str, list[float]] = {"set": [], "set_wait": []}
    try:
        await conn.connect()  # type: ignore[no-untyped-call]
        for i in range(2 * args.probes):
            with_wait = i % 2 == 1
            t0 = time.perf_counter()
            await conn.send_command("SET", key, "1")
            if with_wait:
                await conn.send_command("WAIT", str(args.wait), str(args.timeout_ms))
            await conn.read_response()
            if with_wait:
                await conn.read_response()
            times["set_wait" if with_wait else "set"].append((time.perf_counter() - t0) * 1e6)
        await conn.send_command("DEL", key)
        await conn.read_response()
    finally:
        node.release(conn)
        await client.aclose()
    return {"set_p50_us": round(statistics.median(times["set"])), "set_p99_us": round(percentile(times["set"], 0.99)),
            "set_wait_p50_us": round(statistics.median(times["set_wait"])),
            "set_wait_p99_us": round(percentile(times["set_wait"], 0.99)), "probes": args.probes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    parser.add_argument("--input", type=Path, required=True, help="a history: an fdh file or sim:N?seed=S")
    parser.add_argument("--redis-url", default=None, help="a cluster node (default: a cluster of its own)")
    parser.add_argument("--replicas", type=int, default=1, help="replicas per primary of its own cluster")
    parser.add_argument("--wait", type=int, default=1, help="replicas WAIT asks for in the WAIT rounds")
    parser.add_argument("--timeout-ms", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256, help="transactions per micro-batch (the worker's default)")
    parser.add_argument("--rows", type=int, default=5120, help="transactions per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds, alternating without / with WAIT")
    parser.add_argument("--warm", type=int, default=2560, help="transactions applied first, not measured")
    parser.add_argument("--probes", type=int, default=2000, help="round trips of SET and of SET + WAIT each")
    args = parser.parse_args()
    with ExitStack() as stack:
        url = args.redis_url
        if url is None:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-wait-")))
            cluster = LocalRedisCluster(home / "nodes", home / "logs", appendonly=True)
            stack.callback(cluster.down)
            url = cluster.up(3, args.replicas, timeout_s=120).url
        result = asyncio.run(measure(url, True, args))
        result["round_trip"] = asyncio.run(round_trips(url, args))
    result["command"] = " ".join(["python -m fraudstream.bench.durability", *sys.argv[1:]])
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
