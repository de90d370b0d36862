"""``fraudstream bench capacity --from E2E_JSON``: the cores, workers, Redis shards, brokers and partitions a
target rate needs, from the CPU per transaction that ``bench e2e`` measured (``cpu_us_per_tx``).

The model (docs/scaling.md, "Capacity model") is CPU arithmetic, nothing more:

* each component costs a fixed share of a core per process (polling, timers, cluster gossip: paid at any
  rate) plus a marginal CPU per transaction. ``--at fit`` fits both to the run's phases at
  different rates (10, 25, 50 % of saturation, the fixed rate, saturation); ``--at saturation`` (the default) /
  ``fixed_rate`` take one phase's CPU per transaction as all marginal (right at the rate it was measured);
* worker cores = rate x worker µs/tx / utilisation; one worker process uses one core (its event loop is
  one thread), so workers = rate x µs/tx / (utilisation - fixed share), rounded up;
* Redis shards = rate x Redis µs/tx (all nodes) x imbalance / (one core at the utilisation): Redis runs
  commands on one thread, so a shard is one core. The imbalance is the busiest primary's share over the
  mean share in the measured cluster (1 for a single node);
* broker cores = rate x broker µs/tx x replication factor / utilisation, and brokers = that over the cores
  of one broker, at least the replication factor. The measured broker ran at replication factor 1; each
  follower fetches and writes every record again, so multiplying the whole cost by the factor is an upper
  bound (a follower's fetch costs less than a producer's request): this part is projected, not measured;
* partitions = twice the workers (room to double them without repartitioning, which would move cards
  between partitions and break their order during the change), rounded up to a multiple of the brokers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RATES: tuple[float, ...] = (1_000.0, 10_000.0, 50_000.0)


@dataclass(frozen=True)
class Costs:
    """CPU µs per transaction of each component, as measured (``bench e2e``'s ``cpu_us_per_tx``)."""

    worker: float
    redis_total: float
    kafka_total: float
    redis_imbalance: float = 1.0
    """The busiest primary's CPU over the mean primary's: how much more than an even share one shard gets."""
    worker_fixed: float = 0.0
    redis_fixed: float = 0.0
    kafka_fixed: float = 0.0
    """Cores each worker / Redis node / broker uses whatever the rate (``fit``; 0 otherwise)."""
    source: str = ""


@dataclass(frozen=True)
class Assumptions:
    utilisation: float = 0.6
    """Share of a core each process may use at the target rate: room for bursts, rebalances, a failover."""
    replication_factor: int = 3
    broker_cores: int = 4
    partitions_per_worker: int = 2


@dataclass(frozen=True)
class Plan:
    rate_tps: float
    worker_cores: float
    workers: int
    redis_cores: float
    redis_shards: int
    broker_cores: float
    brokers: int
    partitions: int
    total_cores: float


def costs_from(result: dict[str, Any], *, at: str = "saturation", source: str = "") -> Costs:
    """The costs of one ``bench e2e`` result: at ``saturation`` (``cpu_us_per_tx``) or at its fixed rate
    (``cpu_us_per_tx_at_fixed_rate``)."""
    key = "cpu_us_per_tx" if at == "saturation" else "cpu_us_per_tx_at_fixed_rate"
    cpu = result.get(key) or {}
    if not cpu.get("worker") or cpu.get("redis_total") is None or cpu.get("kafka_total") is None:
        msg = f"{source or 'the result'} has no {key} with worker, redis_total and kafka_total (bench e2e --json)"
        raise ValueError(msg)
    primaries = int(cpu.get("redis_primaries") or 1)
    busiest = cpu.get("redis_busiest_primary")
    total = float(cpu["redis_total"])
    imbalance = busiest * primaries / total if busiest and total > 0 and primaries > 1 else 1.0
    return Costs(worker=float(cpu["worker"]), redis_total=total, kafka_total=float(cpu["kafka_total"]),
                 redis_imbalance=round(imbalance, 3), source=source)


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(fixed cores, marginal µs per transaction) of ``cores = fixed + rate x marginal`` by least squares over
    (rate, cores) points; a negative fixed part (noise) is dropped and the line put through the origin."""
    points = [(r, c) for r, c in points if r > 0]
    if not points:
        return 0.0, 0.0
    n = len(points)
    mean_r = sum(r for r, _ in points) / n
    mean_c = sum(c for _, c in points) / n
    spread = sum((r - mean_r) ** 2 for r, _ in points)
    if n >= 2 and spread > 0:
        slope = sum((r - mean_r) * (c - mean_c) for r, c in points) / spread
        fixed = mean_c - slope * mean_r
        if fixed >= 0 and slope >= 0:
            return round(fixed, 4), round(slope * 1e6, 1)
        if slope < 0:  # no rate dependence seen: all fixed, and nothing to say about the marginal cost
            return round(mean_c, 4), 0.0
    return 0.0, round(sum(r * c for r, c in points) / sum(r * r for r, _ in points) * 1e6, 1)


PHASE_RATE = {"batched": "throughput_tps"}
"""The rate of a phase: its saturation throughput, or what was delivered under a paced load."""


def phase_points(result: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
    """(rate, cpu) of the batched pipeline's phases: saturation, the shares of it and the fixed rate."""
    points = []
    for name, phase in (result.get("phases") or {}).items():
        if not phase or not (name == "batched" or name == "latency" or name.startswith("share_")):
            continue
        rate = float(phase.get(PHASE_RATE.get(name, "delivered_tps")) or 0.0)
        if rate > 0 and phase.get("cpu"):
            points.append((rate, phase["cpu"]))
    return points


def fitted_costs(result: dict[str, Any], *, source: str = "") -> Costs:
    """Fixed cores per process and marginal µs per transaction of the worker, the Redis nodes and the
    brokers, fitted over the run's phases (one worker in each; the nodes and brokers as the run had them)."""
    points = phase_points(result)
    if len(points) < 2:
        msg = f"{source or 'the result'} has fewer than two phases with CPU figures to fit (bench e2e --json)"
        raise ValueError(msg)

    def component(key: str) -> tuple[float, float]:
        return fit([(rate, rate * float(cpu.get(key) or 0.0) / 1e6) for rate, cpu in points])

    def count(key: str) -> int:
        return max(1, max(len(cpu.get(key) or []) for _, cpu in points))

    worker_fixed, worker = component("worker_cpu_us_per_tx")
    redis_fixed, redis_total = component("redis_cpu_us_per_tx")
    kafka_fixed, kafka_total = component("kafka_cpu_us_per_tx")
    at_saturation = costs_from(result, source=source) if result.get("cpu_us_per_tx") else None
    return Costs(worker=worker, redis_total=redis_total, kafka_total=kafka_total,
                 redis_imbalance=at_saturation.redis_imbalance if at_saturation else 1.0,
                 worker_fixed=worker_fixed, redis_fixed=round(redis_fixed / count("redis_nodes"), 4),
                 kafka_fixed=round(kafka_fixed / count("kafka_brokers"), 4), source=source)


def _instances(busy: float, fixed: float, per_instance: float) -> int:
    """How many processes of ``per_instance`` usable cores carry ``busy`` cores of per-transaction work when
    each also spends ``fixed`` cores whatever the rate."""
    room = per_instance - fixed
    if room <= 0:
        msg = f"a process's fixed cost ({fixed:g} cores) leaves no room at {per_instance:g} usable cores"
        raise ValueError(msg)
    return max(1, math.ceil(busy / room - 1e-9))


def plan(rate: float, costs: Costs, assume: Assumptions) -> Plan:
    u = assume.utilisation
    worker_busy = rate * costs.worker / 1e6
    workers = _instances(worker_busy, costs.worker_fixed, u)
    worker_cores = (worker_busy + workers * costs.worker_fixed) / u
    redis_busy = rate * costs.redis_total * costs.redis_imbalance / 1e6
    shards = _instances(redis_busy, costs.redis_fixed, u)
    redis_cores = (redis_busy + shards * costs.redis_fixed) / u
    broker_busy = rate * costs.kafka_total * assume.replication_factor / 1e6
    brokers = max(assume.replication_factor,
                  _instances(broker_busy, costs.kafka_fixed, assume.broker_cores * u))
    broker_cores = (broker_busy + brokers * costs.kafka_fixed) / u
    partitions = math.ceil(workers * assume.partitions_per_worker / brokers) * brokers
    return Plan(rate_tps=rate, worker_cores=round(worker_cores, 2), workers=workers, redis_cores=round(redis_cores, 2),
                redis_shards=shards, broker_cores=round(broker_cores, 2), brokers=brokers, partitions=partitions,
                total_cores=round(worker_cores + redis_cores + broker_cores, 2))


def table(plans: list[Plan], costs: Costs, assume: Assumptions) -> str:
    """A markdown table of the plans, with the inputs it came from."""
    lines = [
        f"inputs: worker {costs.worker:g} µs/tx, Redis {costs.redis_total:g} µs/tx (all nodes; imbalance "
        f"{costs.redis_imbalance:g}), broker {costs.kafka_total:g} µs/tx at replication factor 1"
        + (f" ({costs.source})" if costs.source else ""),
        f"fixed, whatever the rate: {costs.worker_fixed:g} cores per worker, {costs.redis_fixed:g} per Redis node, "
        f"{costs.kafka_fixed:g} per broker",
        f"assumed: {assume.utilisation:.0%} of a core per process, replication factor {assume.replication_factor} "
        f"(broker work x {assume.replication_factor}, projected), {assume.broker_cores} cores per broker, "
        f"{assume.partitions_per_worker} partitions per worker",
        "",
        "| tx/s | worker cores | workers | Redis cores | Redis shards | broker cores | brokers | partitions "
        "| cores in all |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {p.rate_tps:,.0f} | {p.worker_cores:g} | {p.workers} | {p.redis_cores:g} | {p.redis_shards} | "
              f"{p.broker_cores:g} | {p.brokers} | {p.partitions} | {p.total_cores:g} |" for p in plans]
    return "\n".join(lines)


def given_costs(text: str) -> Costs:
    """``worker=70,redis=80,kafka=8``: the three costs, all marginal."""
    try:
        values = {name.strip(): float(value) for name, value in (part.split("=") for part in text.split(","))}
        return Costs(worker=values["worker"], redis_total=values["redis"], kafka_total=values["kafka"],
                     source=f"given: {text}")
    except (KeyError, ValueError) as exc:
        msg = f"--costs wants worker=US,redis=US,kafka=US, got {text!r}"
        raise ValueError(msg) from exc


def main(args: argparse.Namespace) -> int:
    try:
        if args.costs:
            costs = given_costs(args.costs)
        else:
            result = json.loads(Path(args.source).read_text().strip().splitlines()[-1])
            costs = (fitted_costs(result, source=args.source) if args.at == "fit"
                     else costs_from(result, at=args.at, source=args.source))
    except (ValueError, IndexError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not 0 < args.utilisation <= 1:
        print("error: --utilisation is a share of one core, in (0, 1]", file=sys.stderr)
        return 2
    assume = Assumptions(utilisation=args.utilisation, replication_factor=args.replication_factor,
                         broker_cores=args.broker_cores)
    plans = [plan(float(r), costs, assume) for r in args.rates.split(",") if r]
    if args.json:
        print(json.dumps({"costs": asdict(costs), "assumptions": asdict(assume), "plans": [asdict(p) for p in plans]}))
    else:
        print(table(plans, costs, assume))
    return 0
