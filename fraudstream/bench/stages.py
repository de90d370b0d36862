"""Where a scored record's latency went: the worker's per-stage ``timings`` on each record
(``schemas.scored.StageTimings``) and what is left of the benchmark's send → arrival time after them.

``bench e2e`` keeps the scored records of each latency phase and reports, per stage, the p50 and p99 over
the records (``stage_breakdown``): a tail is then the stage whose p99 grows with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

STAGES = ("fetch_ms", "batch_wait_ms", "features_ms", "score_wait_ms", "model_ms")
"""The worker's stages, in a record's order (Kafka timestamp → the start of the publish)."""
REST = "publish_and_read_ms"
"""Send → arrival minus the worker's stages: the publish until the broker's acknowledgement and the
benchmark's consumer reading the record (and the sub-millisecond gap between the benchmark's send stamp and
the record's Kafka timestamp)."""


def stage_breakdown(values: dict[bytes, bytes], sent_at: dict[bytes, float], arrivals: dict[bytes, float]
                    ) -> dict[str, dict[str, float]]:
    """p50 / p99 / max of each stage over the scored records given (transaction id → record value), and of
    the rest (``REST``); records without ``timings`` (an older worker) are left out."""
    rows: list[list[float]] = []
    for tx_id, value in values.items():
        timings = orjson.loads(value).get("timings")
        if not timings or tx_id not in sent_at or tx_id not in arrivals:
            continue
        stages = [_ms(timings.get(name)) for name in STAGES]
        total = (arrivals[tx_id] - sent_at[tx_id]) * 1000
        rows.append([*stages, total - float(np.nansum(stages))])
    if not rows:
        return {}
    table = np.asarray(rows, dtype=np.float64)
    out: dict[str, dict[str, float]] = {}
    for column, name in enumerate((*STAGES, REST)):
        values_ms = table[:, column][~np.isnan(table[:, column])]
        if values_ms.size:
            out[name] = {"p50": round(float(np.percentile(values_ms, 50)), 2),
                         "p99": round(float(np.percentile(values_ms, 99)), 2),
                         "max": round(float(values_ms.max()), 2)}
    return out


def _ms(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def describe(stages: dict[str, dict[str, float]]) -> str:
    """One progress line: each stage's p50 / p99."""
    return ", ".join(f"{name.removesuffix('_ms')} {v['p50']:.1f}/{v['p99']:.1f}" for name, v in stages.items())
