"""Compiles a ``FeatureList`` into per-entity plans that both engines execute.

A plan fixes the tile levels an entity keeps, how many tiles each level retains, the distinct windows
the features read, and one opcode per feature. The Lua source is generated from the plan, and the numpy
engine walks the same plan, so a new feature is declared once and reaches both engines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from features.definitions import (
    DAY,
    Amount,
    AmountVsHistory,
    Calendar,
    DelayedLabelRisk,
    DistinctCounterparties,
    Entity,
    Feature,
    FeatureList,
    GeoVelocity,
    TimeSincePrevious,
    Window,
    WindowedAggregate,
)
from features.errors import FeatureDefinitionError

# Opcodes shared with the Lua template (features/lua/entity.lua).
OPCODES: dict[str, int] = {
    "count": 1,
    "sum": 2,
    "mean": 3,
    "std": 4,
    "min": 5,
    "max": 6,
    "since_prev": 7,
    "ratio": 8,
    "zscore": 9,
    "distinct": 10,
    "geo_velocity": 11,
    "tx_count": 12,
    "fraud_count": 13,
    "fraud_rate": 14,
}


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Tiles (b - delay - tiles, b - delay] of one level."""

    level: int
    tiles: int
    delay: int


# Raw statistics the Lua script returns; window stats index the script's per-window arrays.
WINDOW_STATS: tuple[str, ...] = ("n", "s", "q", "mn", "mx", "dl", "nf")
SPECIAL_STATS: tuple[str, ...] = ("dt", "pgeo", "plat", "plon")


@dataclass(frozen=True, slots=True)
class Op:
    code: int
    window: int
    """Index into ``EntityPlan.windows`` (-1 when the feature has no window)."""
    param: float
    feature: Feature


@dataclass(frozen=True, slots=True)
class EntityPlan:
    entity: Entity
    columns: tuple[int, ...]
    """Positions of this entity's features in the feature list."""
    tile_s: tuple[int, ...]
    ring: tuple[int, ...]
    """Tiles retained per level: enough for the longest (delayed) window of that level."""
    windows: tuple[WindowSpec, ...]
    """Sorted by level, so the windows of a level are contiguous."""
    ops: tuple[Op, ...]
    raw: tuple[tuple[str, int], ...]
    """(statistic, window index or -1) the engines exchange, in order; features derive from these."""
    distinct_levels: tuple[int, ...]
    needs_labels: bool
    distinct_span_s: int
    """The longest distinct-count window (0 when the entity has none)."""

    @property
    def retention_s(self) -> int:
        """Event-time span of state that can still influence a feature."""
        return max(t * r for t, r in zip(self.tile_s, self.ring, strict=True))

    @property
    def counterparty_keep_s(self) -> int:
        """How long a counterparty's last-seen time can still matter: only distinct counts read it, so longer
        (delayed) amount windows keep tiles, not counterparties."""
        return self.distinct_span_s or self.retention_s

    def raw_index(self, stat: str, window: int = -1) -> int:
        return self.raw.index((stat, window))


@dataclass(frozen=True, slots=True)
class Plan:
    stateless_columns: tuple[int, ...]
    stateless: tuple[Amount | Calendar, ...]
    entities: tuple[EntityPlan, ...]
    width: int

    @property
    def retention_s(self) -> int:
        """How far back in event time any feature of the list can reach."""
        return max(ep.retention_s for ep in self.entities)


def _window_of(f: Feature) -> tuple[Window, int] | None:
    if isinstance(f, DistinctCounterparties):
        return f.window, 0
    if isinstance(f, WindowedAggregate | AmountVsHistory | DelayedLabelRisk):
        return f.window, f.delay_tiles
    return None


_NEEDS: dict[str, tuple[str, ...]] = {
    "count": ("n",),
    "sum": ("s",),
    "mean": ("n", "s"),
    "std": ("n", "s", "q"),
    "min": ("mn",),
    "max": ("mx",),
    "ratio": ("n", "s"),
    "zscore": ("n", "s", "q"),
    "distinct": ("dl",),
    "tx_count": ("n",),
    "fraud_count": ("nf",),
    "fraud_rate": ("n", "nf"),
}


def _op_code(f: Feature) -> tuple[str, float]:
    if isinstance(f, WindowedAggregate):
        return f.agg, 0.0
    if isinstance(f, TimeSincePrevious):
        return "since_prev", float(f.cap_s)
    if isinstance(f, AmountVsHistory):
        return f.stat, 0.0
    if isinstance(f, DistinctCounterparties):
        return "distinct", 0.0
    if isinstance(f, GeoVelocity):
        if f.entity != "card":
            msg = f"{f.name}: only cards carry coordinates in events"
            raise FeatureDefinitionError(msg)
        return "geo_velocity", f.min_hours
    if isinstance(f, DelayedLabelRisk):
        if f.entity != "terminal":
            msg = f"{f.name}: labels are kept per terminal only"
            raise FeatureDefinitionError(msg)
        return f.stat, 0.0
    msg = f"{f!r} is not an entity feature"
    raise FeatureDefinitionError(msg)


def _entity_plan(entity: Entity, items: list[tuple[int, Feature]]) -> EntityPlan:
    windowed = [(f, wd) for _, f in items if (wd := _window_of(f)) is not None]
    tiles = sorted({wd[0].tile_s for _, wd in windowed})
    specs = sorted(
        {WindowSpec(level=tiles.index(w.tile_s), tiles=w.tiles, delay=d) for _, (w, d) in windowed},
        key=lambda s: (s.level, s.delay, s.tiles),
    )
    ring = [1] * len(tiles)
    for spec in specs:
        ring[spec.level] = max(ring[spec.level], spec.tiles + spec.delay)
    ops: list[Op] = []
    raw: list[tuple[str, int]] = []
    distinct: set[int] = set()
    distinct_span = 0
    for _, f in items:
        wd = _window_of(f)
        widx = -1
        if wd is not None:
            widx = specs.index(WindowSpec(level=tiles.index(wd[0].tile_s), tiles=wd[0].tiles, delay=wd[1]))
        name, param = _op_code(f)
        if name == "distinct":
            distinct.add(specs[widx].level)
            distinct_span = max(distinct_span, tiles[specs[widx].level] * (specs[widx].tiles + specs[widx].delay))
        needs = [(st, widx) for st in _NEEDS.get(name, ())]
        if name == "since_prev":
            needs = [("dt", -1)]
        elif name == "geo_velocity":
            needs = [("dt", -1), ("pgeo", -1), ("plat", -1), ("plon", -1)]
        raw += [x for x in needs if x not in raw]
        ops.append(Op(code=OPCODES[name], window=widx, param=param, feature=f))
    return EntityPlan(
        entity=entity,
        columns=tuple(i for i, _ in items),
        tile_s=tuple(tiles),
        ring=tuple(ring),
        windows=tuple(specs),
        ops=tuple(ops),
        raw=tuple(raw),
        distinct_levels=tuple(sorted(distinct)),
        needs_labels=any(isinstance(f, DelayedLabelRisk) for _, f in items),
        distinct_span_s=distinct_span,
    )


def compile_plan(features: FeatureList) -> Plan:
    stateless: list[tuple[int, Amount | Calendar]] = []
    per_entity: dict[Entity, list[tuple[int, Feature]]] = {"card": [], "terminal": []}
    for i, f in enumerate(features):
        if isinstance(f, Amount | Calendar):
            stateless.append((i, f))
        else:
            per_entity[f.entity].append((i, f))
    return Plan(
        stateless_columns=tuple(i for i, _ in stateless),
        stateless=tuple(f for _, f in stateless),
        entities=tuple(_entity_plan(e, items) for e, items in per_entity.items() if items),
        width=len(features),
    )


def to_cents(amount: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Amounts are aggregated as integer cents so that sums are exact in Lua and numpy alike."""
    return np.rint(np.asarray(amount, dtype=np.float64) * 100.0).astype(np.int64)


def compute_stateless(
    plan: Plan, amount: npt.NDArray[np.float64], event_time: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Amount and calendar features (raw event time, UTC); identical for both engines by construction."""
    out = np.empty((len(amount), len(plan.stateless)), dtype=np.float64)
    day = np.floor(event_time / DAY)
    hour = np.floor((event_time - day * DAY) / 3600.0)
    # 1970-01-01 was a Thursday: (day + 3) % 7 gives Monday = 0 ... Sunday = 6.
    weekday = np.mod(day + 3.0, 7.0)
    for j, f in enumerate(plan.stateless):
        if isinstance(f, Amount):
            out[:, j] = amount
        elif f.part == "hour":
            out[:, j] = hour
        elif f.part == "is_night":
            out[:, j] = hour < 6.0
        else:
            out[:, j] = weekday >= 5.0
    return out
