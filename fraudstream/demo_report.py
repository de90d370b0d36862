"""What ``fraudstream demo`` measured, and how it is printed (a table) and written (``--summary-json``).

The JSON keeps the DESIGN contract's fields (``produced``, ``scored``, ``dead_lettered``, ``elapsed_s``)
and adds the rest: each phase of the traffic (a backlog offered at once, then a steady rate) with its
throughput and end-to-end latency percentiles, whether the worker kept up with the offered rate, the fraud
share of the traffic (the simulator's ground truth) next to the decisions, the warm-up, the model and the
logs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

DECISIONS = ("approve", "review", "decline")
KEPT_UP_SHARE = 0.9
"""The worker kept up when it scored at least this share of the offered rate over the run."""


@dataclass
class PhaseReport:
    """One phase of the traffic: a backlog offered at once, or a steady rate."""

    name: str
    offered_rate_tps: float | None = None
    """Transactions per second offered (None: all at once)."""
    produced: int = 0
    scored: int = 0
    seconds: float = 0.0
    """First transaction of the phase handed to the producer → last of its scored records read back."""
    throughput_tps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    """Per scored transaction: handed to the Kafka producer → its scored record read by the demo's consumer."""
    first_sent: float | None = field(default=None, repr=False)
    last_outcome: float | None = field(default=None, repr=False)

    def finish(self, latencies_ms: list[float]) -> None:
        if self.first_sent is not None and self.last_outcome is not None:
            self.seconds = round(max(1e-3, self.last_outcome - self.first_sent), 2)
            self.throughput_tps = round(self.scored / self.seconds, 1)
        if latencies_ms:
            values = np.asarray(latencies_ms)
            self.latency_ms = {
                "p50": round(float(np.percentile(values, 50)), 1), "p95": round(float(np.percentile(values, 95)), 1),
                "p99": round(float(np.percentile(values, 99)), 1), "max": round(float(values.max()), 1),
            }

    @property
    def kept_up(self) -> bool | None:
        """Whether the worker scored at the offered rate (None for a backlog: it has no rate to keep)."""
        if not self.offered_rate_tps or not self.scored:
            return None
        expected = self.offered_rate_tps * self.scored / max(1, self.produced)
        return self.throughput_tps >= KEPT_UP_SHARE * expected

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "offered_rate_tps": self.offered_rate_tps, "produced": self.produced,
                "scored": self.scored, "seconds": self.seconds, "throughput_tps": self.throughput_tps,
                "latency_ms": self.latency_ms, "kept_up": self.kept_up}


@dataclass
class DemoReport:
    produced: int = 0
    """Transactions produced to ``transactions`` (malformed records included, labels not)."""
    scored: int = 0
    dead_lettered: int = 0
    elapsed_s: float = 0.0
    """The whole demo: stack, first model, worker start, warm-up, traffic."""
    phases: list[PhaseReport] = field(default_factory=list)
    frauds: int = 0
    """Frauds among the scored transactions (the simulator knows the truth)."""
    decisions: dict[str, dict[str, int]] = field(default_factory=dict)
    """decision → {"fraud": n, "genuine": n}."""
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    degraded: int = 0
    model_versions: dict[str, int] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    """The first model, when this run trained it: version, history, holdout metrics, seconds."""
    warm_up: dict[str, Any] | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.produced == self.scored + self.dead_lettered

    @property
    def steady(self) -> PhaseReport | None:
        """The phase at a rate, whose latencies are the system's (the last phase)."""
        return self.phases[-1] if self.phases else None

    def add_scored(self, record: dict[str, Any], *, is_fraud: bool) -> None:
        self.scored += 1
        self.frauds += is_fraud
        cell = self.decisions.setdefault(str(record["decision"]), {"fraud": 0, "genuine": 0})
        cell["fraud" if is_fraud else "genuine"] += 1
        self.degraded += bool(record.get("degraded"))
        version = str(record.get("model_version"))
        self.model_versions[version] = self.model_versions.get(version, 0) + 1
        _keep_example(self.examples, record)


def _keep_example(examples: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """The three highest scores seen so far, plus the two latest ordinary records."""
    examples.append(record)
    if len(examples) > 5:
        examples.sort(key=lambda r: -float(r["score"]))
        del examples[3]


def summary_json(report: DemoReport) -> dict[str, Any]:
    data = asdict(report)
    data["phases"] = [p.as_json() for p in report.phases]
    steady = report.steady
    # The steady phase's figures at the top level: the rate, throughput and latency a reader looks for.
    data["offered_rate_tps"] = steady.offered_rate_tps if steady else None
    data["throughput_tps"] = steady.throughput_tps if steady else None
    data["latency_ms"] = steady.latency_ms if steady else {}
    data["kept_up"] = steady.kept_up if steady else None
    data["complete"] = report.complete
    data["fraud_share"] = report.frauds / report.scored if report.scored else None
    return data


def _share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _phase_lines(report: DemoReport) -> list[str]:
    lines = [f"  {'phase':<9}{'offered':>12}{'produced':>10}{'scored':>9}{'seconds':>9}{'scored/s':>10}   "
             "latency p50 / p95 / p99 / max"]
    for p in report.phases:
        offered = f"{p.offered_rate_tps:,.0f} tx/s" if p.offered_rate_tps else "at once"
        lat = p.latency_ms
        latency = " / ".join(f"{lat[k]:,.0f}" for k in ("p50", "p95", "p99", "max")) + " ms" if lat else "-"
        note = {True: "", False: "  (fell behind: queueing)", None: "  (a backlog: queueing)"}[p.kept_up]
        lines.append(f"  {p.name:<9}{offered:>12}{p.produced:>10,}{p.scored:>9,}{p.seconds:>9.1f}"
                     f"{p.throughput_tps:>10,.0f}   {latency}{note}")
    lines.append("  latency: a transaction handed to the Kafka producer → its scored record read by the demo's "
                 "consumer")
    return lines


def summary_lines(report: DemoReport) -> list[str]:
    lines = ["", "fraudstream demo summary", "=" * 24]

    def row(name: str, value: str) -> None:
        lines.append(f"{name:<22}{value}")

    if report.model:
        m = report.model
        metrics = m.get("metrics") or {}
        row("model", f"version {m.get('version')} trained now on {m.get('history')}")
        row("", f"AUC {metrics.get('auc_roc', 0):.3f}, AP {metrics.get('average_precision', 0):.3f} on its test "
            f"week ({m.get('seconds', 0):.0f} s)")
    if report.warm_up:
        w = report.warm_up
        row("feature state", f"warmed with {w['days']:.0f} days of the population's history: {w['transactions']:,} "
            f"transactions, {w['labels']:,} fraud labels ({w['seconds']:.1f} s, not scored)")
    row("transactions produced", f"{report.produced:>8,}")
    row("  scored", f"{report.scored:>8,}")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.dlq_reasons.items(), key=lambda kv: -kv[1]))
    row("  dead-lettered", f"{report.dead_lettered:>8,}" + (f"   {reasons}" if reasons else ""))
    row("produced = scored + dead-lettered", f"  {'yes' if report.complete else 'NO'}")
    lines += ["", *_phase_lines(report), ""]
    genuine_total = report.scored - report.frauds
    row("fraud in the traffic", f"{_share(report.frauds, report.scored)} ({report.frauds:,} of {report.scored:,} "
        "scored; the simulator's ground truth)")
    lines += ["", f"  {'decision':<10}{'transactions':>14}{'share':>8}{'fraud':>9}{'genuine':>10}"]
    for decision in (*DECISIONS, *sorted(set(report.decisions) - set(DECISIONS))):
        cell = report.decisions.get(decision, {"fraud": 0, "genuine": 0})
        n = cell["fraud"] + cell["genuine"]
        lines.append(f"  {decision:<10}{n:>14,}{_share(n, report.scored):>8}{cell['fraud']:>9,}{cell['genuine']:>10,}")
    lines.append(f"  {'total':<10}{report.scored:>14,}{_share(report.scored, report.scored):>8}{report.frauds:>9,}"
                 f"{genuine_total:>10,}")
    declined, reviewed = (report.decisions.get(d, {}).get("fraud", 0) for d in ("decline", "review"))
    false_declines = report.decisions.get("decline", {}).get("genuine", 0)
    if report.frauds:
        lines.append(f"  frauds declined {_share(declined, report.frauds)}, sent to review "
                     f"{_share(reviewed, report.frauds)}; genuine transactions declined "
                     f"{_share(false_declines, genuine_total)}")
    lines.append("")
    row("degraded (rules only)", f"{report.degraded:,}")
    row("model versions", ", ".join(f"v{k}: {v:,}" for k, v in sorted(report.model_versions.items())) or "-")
    row("total wall time", f"{report.elapsed_s:.0f} s (stack, model, worker start, warm-up, traffic)")
    for name, path in report.logs.items():
        row(f"log: {name}", path)
    if report.examples:
        lines += ["", "examples (highest scores first):"]
        for r in report.examples:
            reasons = ", ".join(f"{c['feature']} ({c['contribution']:+.2f})" for c in r["reason_codes"])
            lines.append(f"  {r['transaction_id']:<22} {r['amount']:>9.2f} {r['currency']}  score {r['score']:.3f}  "
                         f"{r['decision']:<8} reasons: {reasons or '-'}  rules: {', '.join(r['rules_fired']) or '-'}")
    return lines


def print_summary(report: DemoReport) -> None:
    print("\n".join(summary_lines(report)))
