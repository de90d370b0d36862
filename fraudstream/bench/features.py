"""Feature platform benchmark: online apply_and_read vs a trivial EVALSHA, the transaction-id rule's cost,
and the offline engine.

    .venv/bin/python -m fraudstream.bench.features --json [--redis-url URL] [--online-rows N] --input FDH

The id rule (features/ids.py: a claim before the feature update, the result stored after publication) is
measured as alternating rounds over consecutive slices of the same history: without (apply_and_read
alone, the engine as it was) and with (claim + apply_and_read + record_outcomes), with the Redis CPU and
client CPU per transaction of each and the memory of one id record.

Without ``--redis-url`` it starts its own redis-server on a free port (no persistence) and stops it.
The reference is a pipelined trivial EVALSHA (``return 1`` with the same key/argument shape) sent through
the same client code in the same run (and a trivial FCALL, the mechanism the store uses), so the ratio
says how much of Redis's Lua throughput the feature functions keep. Redis's own CPU time per call is
reported too: on a shared machine it is steadier than wall-clock rates.
Progress goes to stderr; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from config.redis import RedisConnection
from features.events import TransactionEvent
from features.history import load_fdh
from features.ids import Claim, TransactionIds
from features.offline import compute_offline
from features.online import RedisFeatureStore
from features.parity import label_events, transaction_events
from features.resp import RespChannel, WireFactory, hiredis_wire, public_wire
from fraudstream.bench.resp_reference import handwritten_wire
from fraudstream.stack.redis import scratch_redis
from streams.identity import content_hash
from streams.outputs import encode_result

FDH = Path()
"""The history file (``--input``, required): the product never looks beside the clone for data."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def wait_ready(client: aioredis.Redis) -> None:
    for _ in range(200):
        try:
            await client.ping()
            return
        except (ConnectionError, OSError, aioredis.ConnectionError):
            await asyncio.sleep(0.05)
    raise SystemExit("redis did not start")


async def redis_cpu(client: aioredis.Redis) -> float:
    """CPU seconds the redis-server process has used (user + system). Unlike wall-clock rates this is
    barely affected by other processes on a shared machine, so per-call CPU is the steadier comparison."""
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def trivial_calls(
    client: aioredis.Redis, batch: int, seconds: float, kind: str, wire: WireFactory = hiredis_wire
) -> tuple[float, float]:
    """(calls/s, redis CPU µs per call) of a pipelined trivial EVALSHA or FCALL returning 1."""
    channel = RespChannel(client, wire=wire)
    if kind == "evalsha":
        name = str(await client.script_load("return 1")).encode()
        verb = b"EVALSHA"
    else:
        await channel.call_many(
            [
                [
                    b"FUNCTION",
                    b"LOAD",
                    b"REPLACE",
                    b"#!lua name=fsbench\nredis.register_function('fsbench_one', function(keys, args) return 1 end)",
                ]
            ]
        )
        name, verb = b"fsbench_one", b"FCALL"
    calls = 0
    cpu0 = await redis_cpu(client)
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        cmds = []
        for _ in range(batch):
            i += 1
            key = f"bench:{{c:{i % 5000}}}:s".encode()
            cmds.append(
                [
                    verb,
                    name,
                    b"2",
                    key,
                    key + b"x",
                    str(i).encode(),
                    b"1530000000.0",
                    b"1234",
                    b"50.1",
                    b"4.2",
                    b"77",
                    b"1700000000.0",
                ]
            )
        await channel.call_many(cmds)
        calls += batch
    rate = calls / (time.perf_counter() - start)
    return rate, (await redis_cpu(client) - cpu0) / calls * 1e6


FLOOR_LIBRARY = b"""#!lua name=fsfloor
local formats = {}
redis.register_function('fsfloor_state', function(keys, args)
  local blob = redis.call('GET', keys[1]) or args[1]
  local fmt = formats[#blob]
  if not fmt then fmt = string.rep('d', #blob / 8); formats[#blob] = fmt end
  local state = {struct.unpack(fmt, blob)}
  redis.call('SET', keys[1], blob)
  return #state
end)
"""


async def state_floor_calls(client: aioredis.Redis, batch: int, seconds: float, state_bytes: int) -> float:
    """Redis CPU µs per call of a function that only reads an entity's state blob (``state_bytes``, as the
    feature functions' blobs are on average), unpacks it into numbers and writes it back: what any entity
    function costs before it counts, windows or deduplicates anything. Its format cache is an upvalue, as
    the feature functions' is."""
    channel = RespChannel(client)
    await channel.call_many([[b"FUNCTION", b"LOAD", b"REPLACE", FLOOR_LIBRARY]])
    blob = bytes(state_bytes // 8 * 8)
    keys = [f"fsfloor:{{c:{i}}}:s".encode() for i in range(5000)]
    await channel.call_many([[b"SET", key, blob] for key in keys])
    calls = 0
    cpu0 = await redis_cpu(client)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        await channel.call_many([[b"FCALL", b"fsfloor_state", b"1", keys[(calls + i) % len(keys)], blob]
                                 for i in range(batch)])
        calls += batch
    cpu = (await redis_cpu(client) - cpu0) / calls * 1e6
    await channel.call_many([[b"DEL", *keys[i : i + 1000]] for i in range(0, len(keys), 1000)])
    return cpu


async def mean_state_bytes(client: aioredis.Redis, prefix: str, sample: int = 2000) -> float:
    """Average length of the state blobs ('s' field of the entity hashes) under ``prefix``."""
    keys = []
    async for key in client.scan_iter(match=f"{prefix}:*:s", count=1000):
        keys.append(key)
        if len(keys) >= sample:
            break
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hstrlen(key, "s")
    sizes = await pipe.execute()
    return sum(sizes) / len(sizes) if sizes else 0.0


async def online(client: aioredis.Redis, rows: int, warm: int, batch: int) -> dict[str, float]:
    tx, labels = load_fdh(FDH, limit=warm + rows)
    events = transaction_events(tx)
    label_list = label_events(labels)
    prefix = f"fsbench:{uuid.uuid4().hex[:8]}"
    store = RedisFeatureStore(client, key_prefix=prefix)
    await store.load_scripts()
    await store.apply_labels(label_list)  # labels up front: every read then scans the label ZSETs
    try:
        for start in range(0, warm, batch):
            await store.apply_and_read(events[start : start + batch])
        log(f"online: warmed state with {warm:,} transactions")
        cpu = time.process_time()
        server_cpu = await redis_cpu(client)
        t0 = time.perf_counter()
        for start in range(warm, warm + rows, batch):
            await store.apply_and_read(events[start : start + batch])
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu
        server_cpu = await redis_cpu(client) - server_cpu
        state_bytes = await mean_state_bytes(client, prefix)
    finally:
        await store.purge()
    return {
        "state_bytes": state_bytes,
        "tx_per_s": rows / wall,
        "client_cpu_us_per_tx": cpu / rows * 1e6,
        "redis_cpu_us_per_tx": server_cpu / rows * 1e6,
    }


# A typical scored result as the worker stores it for repeats (3 reason codes, no rules, no shadow).
RESULT_FIELDS = {
    "score": 0.012345678, "decision": "approve",
    "reason_codes": [{"code": f"R_FEATURE_{i}", "feature": f"card_feature_{i}_30d", "contribution": 0.123456789}
                     for i in range(3)],
    "rules_fired": [], "model_name": "fraud_dnn", "model_version": 3, "model_label": "stable", "degraded": False,
    "shadow": None, "feature_list_hash": "0" * 64,
}


async def id_rule_cost(client: aioredis.Redis, fdh: Path, rows: int, warm: int, batch: int) -> dict[str, float]:
    """Alternating rounds without and with the id rule, each on the next ``batch`` transactions."""
    tx, labels = load_fdh(fdh, limit=warm + rows)
    events = transaction_events(tx)
    prefix = f"fsbench:{uuid.uuid4().hex[:8]}"
    store = RedisFeatureStore(client, key_prefix=prefix)
    ids = TransactionIds(client, key_prefix=prefix)
    await store.load_scripts()
    await ids.load_scripts()
    await store.apply_labels(label_events(labels))
    outcome = encode_result(RESULT_FIELDS)
    totals = {v: {"n": 0, "wall": 0.0, "client": 0.0, "redis": 0.0, "memory": 0.0} for v in ("without", "with")}
    try:
        for start in range(0, warm, batch):
            await store.apply_and_read(events[start : start + batch])
        for k, start in enumerate(range(warm, warm + rows, batch)):
            chunk = events[start : start + batch]
            variant = ("without", "with")[k % 2]
            memory = int((await client.info("memory"))["used_memory"])
            cpu, server, t0 = time.process_time(), await redis_cpu(client), time.perf_counter()
            if variant == "with":
                claims = [Claim(e.transaction_id, content_hash(e.card_ref, e.terminal_id, e.amount, "EUR",
                                                               e.event_time, e.latitude, e.longitude),
                                "transactions", 0, start + i) for i, e in enumerate(chunk)]
                await ids.claim(claims)
                await store.apply_and_read(chunk)
                await ids.record_outcomes([(e.transaction_id, outcome) for e in chunk])
            else:
                await store.apply_and_read(chunk)
            wall = time.perf_counter() - t0
            totals[variant]["redis"] += await redis_cpu(client) - server
            totals[variant]["client"] += time.process_time() - cpu
            totals[variant]["wall"] += wall
            totals[variant]["n"] += len(chunk)
            totals[variant]["memory"] += int((await client.info("memory"))["used_memory"]) - memory
        sample = [ids.key(e.transaction_id) for e in events[warm + batch : warm + 2 * batch : 10]]
        sizes = [await client.memory_usage(key) or 0 for key in sample]
    finally:
        await store.purge()
        await ids.purge()
    out: dict[str, float] = {}
    for variant, t in totals.items():
        out[f"tx_per_s_{variant}"] = t["n"] / t["wall"]
        out[f"redis_cpu_us_per_tx_{variant}"] = t["redis"] / t["n"] * 1e6
        out[f"client_cpu_us_per_tx_{variant}"] = t["client"] / t["n"] * 1e6
        out[f"memory_bytes_per_tx_{variant}"] = t["memory"] / t["n"]
    out["record_bytes"] = sum(sizes) / max(1, len(sizes))
    out["outcome_bytes"] = len(outcome)
    return out


# the last: the code before hiredis (fraudstream/bench/resp_reference.py)
WIRES: dict[str, WireFactory] = {"hiredis": hiredis_wire, "redis-py": public_wire, "handwritten": handwritten_wire}
TRANSPORTS = tuple(WIRES)


def spread(values: list[float]) -> dict[str, float]:
    """Median and range of one measure over the rounds (the machine is shared: single rounds are noisy)."""
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


async def transport_ab(client: aioredis.Redis, events: list[TransactionEvent], args: argparse.Namespace
                       ) -> dict[str, object]:
    """The transports of ``features.resp`` in alternating rounds (each goes first in turn), each on the
    next consecutive slice of the same history, through the store's two paths: ``apply_and_read`` (one
    round trip per batch of ``--batch``) and ``submit``/``collect`` (the worker's: batches of ``--id-batch``,
    the next sent before the last is read), and a pipelined trivial FCALL that measures the transport alone.
    Client CPU is this process's CPU time: the transport's cost shows there first."""
    prefix = f"fsbench:{uuid.uuid4().hex[:8]}"
    stores = {t: RedisFeatureStore(client, key_prefix=prefix, wire=WIRES[t]) for t in TRANSPORTS}
    await stores[TRANSPORTS[0]].load_scripts()
    rows, warm = args.transport_rows, args.warm_rows
    per: dict[str, dict[str, list[float]]] = {t: {} for t in TRANSPORTS}

    def note(t: str, name: str, value: float) -> None:
        per[t].setdefault(name, []).append(value)

    async def lane(store: RedisFeatureStore, chunk: list[TransactionEvent]) -> None:
        step = args.id_batch
        pending = await store.submit(chunk[:step])
        for start in range(step, len(chunk), step):
            following = await store.submit(chunk[start : start + step])
            await store.collect(pending)
            pending = following
        await store.collect(pending)

    next_row = warm
    try:
        for start in range(0, warm, args.batch):
            await stores[TRANSPORTS[0]].apply_and_read(events[start : start + args.batch])
        for k in range(args.transport_rounds):
            order = TRANSPORTS[k % len(TRANSPORTS):] + TRANSPORTS[: k % len(TRANSPORTS)]  # each goes first in turn
            for t in order:
                store = stores[t]
                for path in ("apply_and_read", "submit_collect"):
                    chunk = events[next_row : next_row + rows]
                    next_row += rows
                    if len(chunk) < rows:
                        raise SystemExit("not enough rows for the transport rounds: lower --transport-rows")
                    cpu, t0 = time.process_time(), time.perf_counter()
                    if path == "apply_and_read":
                        for start in range(0, rows, args.batch):
                            await store.apply_and_read(chunk[start : start + args.batch])
                    else:
                        await lane(store, chunk)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
                    note(t, f"{path}_tx_per_s", rows / wall)
                    note(t, f"{path}_client_cpu_us_per_tx", cpu / rows * 1e6)
                cpu, t0 = time.process_time(), time.perf_counter()
                rate, _ = await trivial_calls(client, args.batch, args.transport_seconds, "fcall", WIRES[t])
                note(t, "trivial_fcall_calls_per_s", rate)
                note(t, "trivial_fcall_client_cpu_us_per_call",
                     (time.process_time() - cpu) / (rate * (time.perf_counter() - t0)) * 1e6)
            log(f"transport round {k + 1}/{args.transport_rounds}: " + "; ".join(
                f"{t} {per[t]['apply_and_read_tx_per_s'][-1]:,.0f} / {per[t]['submit_collect_tx_per_s'][-1]:,.0f} tx/s,"
                f" {per[t]['submit_collect_client_cpu_us_per_tx'][-1]:.1f} µs client CPU/tx" for t in TRANSPORTS))
    finally:
        for store in stores.values():
            await store.close()
        await stores[TRANSPORTS[0]].purge()
    out: dict[str, object] = {t: {name: spread(v) for name, v in per[t].items()} for t in TRANSPORTS}
    # paired per round against the old code: the transports of one round ran seconds apart, so their ratio
    # is steadier than either figure
    old = TRANSPORTS[-1]
    for t in TRANSPORTS[:-1]:
        out[f"ratio_{t}_to_{old}"] = {
            name: spread([a / b for a, b in zip(per[t][name], per[old][name], strict=True)]) for name in per[t]
        }
    out["rounds"] = args.transport_rounds
    out["rows_per_path_and_round"] = rows
    return out


async def run(args: argparse.Namespace) -> dict[str, object]:
    with contextlib.ExitStack() as stack:
        url = args.redis_url
        if url is None:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-redis-")))
            url = stack.enter_context(scratch_redis(scratch))
        return await measure(url, args)


def machine(load_before: tuple[float, float, float]) -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


async def measure(url: str, args: argparse.Namespace) -> dict[str, object]:
    # the worker's socket timeout (streams/runtime.py): redis-py's read_response applies it per reply
    client = RedisConnection(url=url).node_client(socket_timeout=args.socket_timeout or None)
    transports: dict[str, object] | None = None
    try:
        await wait_ready(client)
        load_before = os.getloadavg()
        if args.transport_rounds:
            needed = args.warm_rows + 2 * len(TRANSPORTS) * args.transport_rows * args.transport_rounds
            tx, _ = load_fdh(FDH, limit=needed)
            transports = await transport_ab(client, transaction_events(tx), args)
            if args.transport_only:
                return {"transport_ab": transports, "machine": machine(load_before)}
        ref, ref_cpu = await trivial_calls(client, args.batch, args.seconds, "evalsha")
        fref, fref_cpu = await trivial_calls(client, args.batch, args.seconds, "fcall")
        log(f"trivial EVALSHA: {ref:,.0f} calls/s; trivial FCALL: {fref:,.0f} calls/s")
        on = await online(client, args.online_rows, args.warm_rows, args.batch)
        rule = await id_rule_cost(client, FDH, args.online_rows, args.warm_rows, args.id_batch)
        log(f"id rule: {rule['tx_per_s_without']:,.0f} → {rule['tx_per_s_with']:,.0f} tx/s, Redis CPU "
            f"{rule['redis_cpu_us_per_tx_without']:.2f} → {rule['redis_cpu_us_per_tx_with']:.2f} µs/tx, "
            f"{rule['record_bytes']:.0f} bytes per id record")
        ref_after, ref_cpu_after = await trivial_calls(client, args.batch, args.seconds, "evalsha")
        log(f"online apply_and_read: {on['tx_per_s']:,.0f} tx/s")
        log(f"trivial EVALSHA after: {ref_after:,.0f} calls/s")
        floor_cpu = await state_floor_calls(client, args.batch, args.seconds, int(on["state_bytes"]))
        log(f"read + unpack + write of a {on['state_bytes']:,.0f}-byte state: {floor_cpu:.2f} µs of Redis CPU a call")
    finally:
        await client.aclose()
    tx, labels = load_fdh(FDH)
    best = float("inf")
    best_cpu = float("inf")
    for _ in range(args.offline_repeats):
        cpu = time.process_time()
        t0 = time.perf_counter()
        compute_offline(tx, labels)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    log(f"offline: {len(tx) / best:,.0f} rows/s (best of {args.offline_repeats})")
    reference = (ref + ref_after) / 2
    return {
        "online_tx_per_s": round(on["tx_per_s"], 1),
        "online_script_calls_per_s": round(2 * on["tx_per_s"], 1),
        "online_client_cpu_us_per_tx": round(on["client_cpu_us_per_tx"], 2),
        "online_redis_cpu_us_per_tx": round(on["redis_cpu_us_per_tx"], 2),
        "trivial_evalsha_calls_per_s": round(reference, 1),
        "trivial_fcall_calls_per_s": round(fref, 1),
        "trivial_evalsha_redis_cpu_us_per_call": round((ref_cpu + ref_cpu_after) / 2, 2),
        "trivial_fcall_redis_cpu_us_per_call": round(fref_cpu, 2),
        # what one Redis core could sustain if it were not shared: 1e6 / CPU microseconds per unit
        "online_tx_per_redis_cpu_s": round(1e6 / on["redis_cpu_us_per_tx"], 1),
        "trivial_evalsha_calls_per_redis_cpu_s": round(2e6 / (ref_cpu + ref_cpu_after), 1),
        "online_tx_vs_trivial_calls": round(on["tx_per_s"] / reference, 3),
        # the floor: two entity calls per transaction that only read, unpack and write their state
        "state_bytes_mean": round(on["state_bytes"], 1),
        "state_floor_redis_cpu_us_per_call": round(floor_cpu, 2),
        "state_floor_tx_per_redis_cpu_s": round(1e6 / (2 * floor_cpu), 1),
        "id_rule": {k: round(v, 2) for k, v in rule.items()},
        "id_rule_tx_per_s_ratio": round(rule["tx_per_s_with"] / rule["tx_per_s_without"], 3),
        "id_rule_redis_cpu_ratio": round(rule["redis_cpu_us_per_tx_with"] / rule["redis_cpu_us_per_tx_without"], 3),
        "online_rows": args.online_rows,
        "batch": args.batch,
        "offline_rows": len(tx),
        "offline_rows_per_s": round(len(tx) / best, 1),
        "offline_rows_per_cpu_s": round(len(tx) / best_cpu, 1),
        "transport_ab": transports,
        "machine": machine(load_before),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--online-rows", type=int, default=40_000)
    parser.add_argument("--warm-rows", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--id-batch", type=int, default=256,
                        help="transactions per round of the id-rule comparison (the worker's batch size)")
    parser.add_argument("--input", type=Path, required=True,
                        help="the fdh Parquet file, e.g. the Fraud Detection Handbook's transactions")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--offline-repeats", type=int, default=3)
    parser.add_argument("--socket-timeout", type=float, default=5.0,
                        help="the Redis client's (the worker's: 5 s; 0: none)")
    parser.add_argument("--transport-rounds", type=int, default=0,
                        help="A/B rounds of features.resp's transports (hiredis.Reader on the stream, redis-py's "
                        "public read_response per reply, the hand-written parser), alternating; 0 = skip")
    parser.add_argument("--transport-rows", type=int, default=8192, help="transactions per path, transport and round")
    parser.add_argument("--transport-seconds", type=float, default=1.0,
                        help="trivial FCALL time per transport and round")
    parser.add_argument("--transport-only", action="store_true", help="only the transport A/B")
    args = parser.parse_args()
    global FDH
    FDH = args.input
    result = asyncio.run(run(args))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
