"""Features from raw window statistics: the one formula per feature kind, used by both engines.

The online engine gets the raw statistics from Redis, the offline engine computes them with numpy;
both then call ``derive_entity``. Counts and sums of integer cents are exact in both engines, so the
derived values agree bit for bit (geo velocity included: the trigonometry runs here, once).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from features.plan import OPCODES, EntityPlan

F64 = npt.NDArray[np.float64]
RawGetter = Callable[[tuple[str, int]], npt.NDArray[np.float64] | npt.NDArray[np.int64]]
EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: F64, lon1: F64, lat2: F64, lon2: F64) -> F64:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2.0) ** 2
    return np.asarray(2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))), dtype=np.float64)


def _safe_div(num: F64, den: F64) -> F64:
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def derive_entity(ep: EntityPlan, raw: RawGetter, cents: F64, lat: F64, lon: F64) -> list[F64]:
    """One column per feature of ``ep`` from the raw statistics; NaN coordinates = missing.

    ``raw((stat, window))`` returns a statistic's column (``ep.raw`` lists what exists).
    """
    out: list[F64] = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for op in ep.ops:
            w = op.window

            def col(stat: str, w: int = w) -> F64:
                return np.asarray(raw((stat, w)), dtype=np.float64)

            code = op.code
            if code in (OPCODES["count"], OPCODES["tx_count"]):
                x = col("n")
            elif code == OPCODES["sum"]:
                x = col("s") / 100.0
            elif code == OPCODES["mean"]:
                x = _safe_div(col("s"), col("n")) / 100.0
            elif code == OPCODES["min"]:
                x = col("mn") / 100.0
            elif code == OPCODES["max"]:
                x = col("mx") / 100.0
            elif code in (OPCODES["std"], OPCODES["zscore"]):
                mean = _safe_div(col("s"), col("n"))
                var = _safe_div(col("q"), col("n")) - mean * mean
                sd = np.sqrt(np.where(var > 0.0, var, 0.0))
                x = sd / 100.0 if code == OPCODES["std"] else _safe_div(cents - mean, sd)
            elif code == OPCODES["ratio"]:
                x = _safe_div(cents, _safe_div(col("s"), col("n")))
            elif code == OPCODES["since_prev"]:
                dt = col("dt", -1)
                x = np.where(dt < 0.0, op.param, np.minimum(dt, op.param))
            elif code == OPCODES["distinct"]:
                x = col("dl")
            elif code == OPCODES["geo_velocity"]:
                dt = col("dt", -1)
                ok = (col("pgeo", -1) == 1.0) & (dt >= 0.0) & ~np.isnan(lat) & ~np.isnan(lon)
                km = haversine_km(col("plat", -1), col("plon", -1), lat, lon)
                x = np.where(ok, km / np.maximum(dt / 3600.0, op.param), 0.0)
            elif code == OPCODES["fraud_count"]:
                x = col("nf")
            elif code == OPCODES["fraud_rate"]:
                x = _safe_div(col("nf"), col("n"))
            else:
                msg = f"no formula for opcode {code}"
                raise AssertionError(msg)
            out.append(np.asarray(x, dtype=np.float64))
    return out
