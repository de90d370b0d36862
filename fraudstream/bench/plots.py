"""Figures of several ``bench e2e --json`` results side by side, for docs/benchmarks.md:

    python -m fraudstream.bench.plots --out docs/bench-e2e-runs.png run1.json run2.json run3.json

Left: p50 and p99 (send → scored record received) against the offered share of each run's own capacity,
with each run's Kafka round trip p99 (no worker). Right: where the time goes at each share, the p50 and p99
of each worker stage (``timings`` on the scored records, ``fraudstream/bench/stages.py``), over the runs.
Each file holds one result (the JSON line ``bench e2e --json`` prints last).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from fraudstream.bench.stages import REST, STAGES


def load(path: Path) -> dict[str, Any]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def plot_runs(results: list[dict[str, Any]], labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (result, label) in enumerate(zip(results, labels, strict=True)):
        rows = result["latency_at_share"]
        shares = [100 * r["share"] for r in rows]
        colour = colours[i % len(colours)]
        left.plot(shares, [r["p50_ms"] for r in rows], "o-", color=colour,
                  label=f"{label} p50 ({result['throughput_tps']:,.0f} tx/s = 100 %)")
        left.plot(shares, [r["p99_ms"] for r in rows], "s--", color=colour, label=f"{label} p99")
        left.axhline(result["kafka_rtt_p99_ms"], color=colour, linestyle=":", linewidth=1)
    left.set(xlabel="offered load, % of the run's own saturation throughput",
             ylabel="ms, send → scored record received", yscale="log",
             title="latency at a share of capacity (dotted: Kafka round trip p99, no worker)")
    left.legend(fontsize=7)
    names = [*STAGES, REST]
    shares = [r["share"] for r in results[0]["latency_at_share"]]
    width = 0.8 / len(shares)
    x = np.arange(len(names))
    for j, share in enumerate(shares):
        p50 = [_mean(results, share, name, "p50") for name in names]
        p99 = [_mean(results, share, name, "p99") for name in names]
        offset = (j - (len(shares) - 1) / 2) * width
        right.bar(x + offset, p99, width, color=colours[j], alpha=0.35, label=f"{share:.0%} p99")
        right.bar(x + offset, p50, width, color=colours[j], label=f"{share:.0%} p50")
    right.set_xticks(x, [n.removesuffix("_ms").replace("_", " ") for n in names], fontsize=8)
    right.set(ylabel="ms (mean over the runs)", yscale="log",
              title="per stage: p50 (solid) and p99 (light) at each share")
    right.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mean(results: list[dict[str, Any]], share: float, stage: str, q: str) -> float:
    values = [row["stages"][stage][q] for result in results for row in result["latency_at_share"]
              if row["share"] == share and stage in row.get("stages", {})]
    return float(np.mean(values)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="files with a bench e2e --json result each")
    parser.add_argument("--labels", default="", help="comma-separated, default run 1, run 2, …")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [f"run {i + 1}" for i in range(len(args.runs))]
    plot_runs([load(p) for p in args.runs], labels, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
