"""The figures of ``bench e2e`` that hold across machines: ratios to ceilings measured in the same run.

Absolute tx/s and ms differ by 1.5-1.8x between two VMs of the same kind (issue #20), and a fixed offered
rate is a different share of each one's capacity. So a run also measures its own ceilings (the worker as a
pass-through, ``echo_tps``; the broker's round trip without a worker, ``kafka_rtt_*``), offers its latency
phases as shares of its own saturation throughput, and expresses CPU per transaction in units of the run's
trivial Redis call (the machine reference).
"""

from __future__ import annotations

import math
from typing import Any

SHARES: tuple[float, ...] = (0.1, 0.25, 0.5)
"""Offered load of the latency phases, as shares of the run's saturation throughput."""
HEADLINE_SHARE = 0.5
"""The share whose latency is the headline ``p50_ms`` / ``p99_ms``."""
COMPONENTS = ("worker", "redis", "kafka")

TARGETS = {
    "throughput_vs_echo >= 0.5": ("throughput_vs_echo", ">=", 0.5),
    "p99_ms at 50% <= 50": ("p99_ms", "<=", 50.0),
    "p99_vs_kafka_rtt at 50% <= 5": ("p99_vs_kafka_rtt", "<=", 5.0),
    "p50_ms at 10% <= 10": ("p50_ms_at_10pct", "<=", 10.0),
    "speedup_vs_naive >= 15": ("speedup_vs_naive", ">=", 15.0),
}
"""Issue #20's targets: held in the benchmark's output, never in a timed test."""


def share_key(share: float) -> str:
    return f"share_{round(share * 100)}"


def reference_call_us(reference: dict[str, dict[str, float]]) -> float:
    """The run's trivial Redis call CPU µs: the mean of the measurements before and after the phases."""
    values = [r["redis_trivial_call_cpu_us"] for r in reference.values() if r.get("redis_trivial_call_cpu_us")]
    return sum(values) / len(values) if values else float("nan")


def cpu_units(cpu: dict[str, float], call_us: float) -> dict[str, float]:
    """CPU per transaction of each component in trivial Redis calls, and their sum."""
    units = {name: round(cpu[f"{name}_cpu_us_per_tx"] / call_us, 1)
             for name in COMPONENTS if f"{name}_cpu_us_per_tx" in cpu and call_us > 0}
    if units:
        units["total"] = round(sum(units.values()), 1)
    return units


def _div(a: float, b: float) -> float:
    return round(a / b, 3) if b and not math.isnan(b) else float("nan")


def ratio_figures(batched: dict[str, Any], echo: dict[str, Any], rtt: dict[str, Any],
                  shares: dict[float, dict[str, Any]], reference: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The same-run ceilings and the ratios to them, for the JSON's top level."""
    at_half = shares[HEADLINE_SHARE]
    lowest = shares[min(shares)]
    call_us = reference_call_us(reference)
    return {
        "echo_tps": round(echo["throughput_tps"], 1),
        "throughput_vs_echo": _div(batched["throughput_tps"], echo["throughput_tps"]),
        "kafka_rtt_p50_ms": round(rtt["p50_ms"], 2),
        "kafka_rtt_p99_ms": round(rtt["p99_ms"], 2),
        "p999_ms": round(at_half["p999_ms"], 2),
        "p99_vs_kafka_rtt": _div(at_half["p99_ms"], rtt["p99_ms"]),
        "latency_share": HEADLINE_SHARE,
        f"p50_ms_at_{round(min(shares) * 100)}pct": round(lowest["p50_ms"], 2),
        "latency_at_share": [
            {"share": share, "offered_tps": round(p["offered_tps"], 1), "delivered_tps": round(p["delivered_tps"], 1),
             "p50_ms": round(p["p50_ms"], 2), "p99_ms": round(p["p99_ms"], 2), "p999_ms": round(p["p999_ms"], 2),
             "lost": p["lost"], "stages": p.get("stages", {})}
            for share, p in sorted(shares.items())
        ],
        "reference_call_cpu_us": round(call_us, 3),
        "cpu_units_per_tx": cpu_units(batched.get("cpu") or {}, call_us),
    }


def targets(result: dict[str, Any]) -> dict[str, bool | None]:
    """Each target of issue #20: held (True), missed (False) or not measured (None)."""
    out: dict[str, bool | None] = {}
    for name, (key, op, bound) in TARGETS.items():
        value = result.get(key)
        if not isinstance(value, int | float) or math.isnan(value):
            out[name] = None
        else:
            out[name] = value >= bound if op == ">=" else value <= bound
    return out
