"""Declarative feature definitions: the single source both engines compute from.

Each feature is a keyword-only frozen dataclass. The online engine (Lua in Redis) and the offline engine
(numpy) never hold their own list of features: they read ``FEATURE_LIST`` and compile it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from features.errors import FeatureDefinitionError

Entity = Literal["card", "terminal"]
Aggregate = Literal["count", "sum", "mean", "std", "min", "max"]
HistoryStat = Literal["ratio", "zscore"]
CalendarPart = Literal["hour", "is_night", "is_weekend"]
RiskStat = Literal["tx_count", "fraud_count", "fraud_rate"]

MINUTE = 60
HOUR = 3600
DAY = 86_400

# Which entity's transactions a counterparty count looks at.
COUNTERPARTY: dict[str, str] = {"card": "terminal", "terminal": "card"}


@dataclass(frozen=True, kw_only=True, slots=True)
class Window:
    """A tile-aligned window: the tiles with bucket index in (b(t) - length/tile, b(t)]."""

    name: str
    length_s: int
    tile_s: int

    def __post_init__(self) -> None:
        if self.tile_s <= 0 or self.length_s <= 0 or self.length_s % self.tile_s:
            msg = f"window {self.name!r}: length {self.length_s}s must be a positive multiple of the tile"
            raise FeatureDefinitionError(msg)

    @property
    def tiles(self) -> int:
        return self.length_s // self.tile_s


W10M = Window(name="10m", length_s=10 * MINUTE, tile_s=MINUTE)
W1H = Window(name="1h", length_s=HOUR, tile_s=5 * MINUTE)
W1D = Window(name="1d", length_s=DAY, tile_s=HOUR)
W7D = Window(name="7d", length_s=7 * DAY, tile_s=DAY)
W30D = Window(name="30d", length_s=30 * DAY, tile_s=DAY)
W28D = Window(name="28d", length_s=28 * DAY, tile_s=DAY)
# Delayed-label windows use day tiles, as the handbook counts whole days.
W1D_DAYTILE = Window(name="1d", length_s=DAY, tile_s=DAY)


@dataclass(frozen=True, kw_only=True, slots=True)
class Amount:
    """The transaction's amount as sent."""

    kind: Literal["amount"] = "amount"

    @property
    def name(self) -> str:
        return "amount"

    @property
    def entity(self) -> None:
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Calendar:
    """Calendar parts of the raw event time in UTC (night = hour < 6, weekend = Saturday or Sunday)."""

    part: CalendarPart
    kind: Literal["calendar"] = "calendar"

    @property
    def name(self) -> str:
        return f"tx_{self.part}"

    @property
    def entity(self) -> None:
        return None


def _check_delay(name: str, window: Window, delay_s: int) -> None:
    if delay_s < 0 or delay_s % window.tile_s:
        msg = f"{name}: the delay must be a non-negative whole number of tiles"
        raise FeatureDefinitionError(msg)


def _delay_suffix(delay_s: int) -> str:
    return f"_delay{delay_s // DAY}d" if delay_s % DAY == 0 else f"_delay{delay_s}s"


@dataclass(frozen=True, kw_only=True, slots=True)
class WindowedAggregate:
    """count / sum / mean / std / min / max of the entity's amounts over a window (current included).

    With ``delay_s`` > 0 the window is (t - delay - W, t - delay] (tiles), the current transaction not
    included: the entity's behaviour before a recent change (min and max have no delayed form).
    """

    entity: Entity
    agg: Aggregate
    window: Window
    delay_s: int = 0
    kind: Literal["window"] = "window"

    def __post_init__(self) -> None:
        _check_delay(self.name, self.window, self.delay_s)
        if self.delay_s and self.agg in ("min", "max"):
            msg = f"{self.name}: min and max are kept for undelayed windows only"
            raise FeatureDefinitionError(msg)

    @property
    def name(self) -> str:
        suffix = _delay_suffix(self.delay_s) if self.delay_s else ""
        return f"{self.entity}_{self.agg}_{self.window.name}{suffix}"

    @property
    def delay_tiles(self) -> int:
        return self.delay_s // self.window.tile_s


@dataclass(frozen=True, kw_only=True, slots=True)
class TimeSincePrevious:
    """Seconds since the entity's previous transaction (effective times), capped; the cap when none."""

    entity: Entity
    cap_s: int = 30 * DAY
    kind: Literal["since_prev"] = "since_prev"

    @property
    def name(self) -> str:
        return f"{self.entity}_seconds_since_prev"


@dataclass(frozen=True, kw_only=True, slots=True)
class AmountVsHistory:
    """The amount against the entity's window: ratio to the mean, or z-score (0 when undefined).

    With ``delay_s`` > 0 against the delayed window (t - delay - W, t - delay]: a baseline that the last
    ``delay_s`` of (possibly fraudulent) spending cannot inflate.
    """

    entity: Entity
    stat: HistoryStat
    window: Window
    delay_s: int = 0
    kind: Literal["vs_history"] = "vs_history"

    def __post_init__(self) -> None:
        _check_delay(self.name, self.window, self.delay_s)

    @property
    def name(self) -> str:
        suffix = _delay_suffix(self.delay_s) if self.delay_s else ""
        return f"{self.entity}_amount_{self.stat}_{self.window.name}{suffix}"

    @property
    def delay_tiles(self) -> int:
        return self.delay_s // self.window.tile_s


@dataclass(frozen=True, kw_only=True, slots=True)
class DistinctCounterparties:
    """Distinct counterparties (card → terminals, terminal → cards) seen in the window."""

    entity: Entity
    window: Window
    kind: Literal["distinct"] = "distinct"

    @property
    def name(self) -> str:
        return f"{self.entity}_distinct_{COUNTERPARTY[self.entity]}s_{self.window.name}"


@dataclass(frozen=True, kw_only=True, slots=True)
class GeoVelocity:
    """km/h between the entity's consecutive transactions; 0 when either lacks coordinates."""

    entity: Entity
    min_hours: float = 1.0 / 60.0
    kind: Literal["geo_velocity"] = "geo_velocity"

    @property
    def name(self) -> str:
        return f"{self.entity}_geo_velocity_kmh"


@dataclass(frozen=True, kw_only=True, slots=True)
class DelayedLabelRisk:
    """Handbook risk: transactions and known frauds of the entity in (t - delay - W, t - delay].

    A fraud counts only if its label's ``available_at`` <= the transaction's effective time.
    """

    entity: Entity
    stat: RiskStat
    window: Window
    delay_s: int = 7 * DAY
    kind: Literal["label_risk"] = "label_risk"

    def __post_init__(self) -> None:
        if self.delay_s % self.window.tile_s:
            msg = f"{self.name}: the delay must be a whole number of tiles"
            raise FeatureDefinitionError(msg)

    @property
    def name(self) -> str:
        # The handbook's 7-day delay is the unnamed default; another delay is part of the name.
        suffix = "" if self.delay_s == 7 * DAY else _delay_suffix(self.delay_s)
        return f"{self.entity}_delayed_{self.stat}_{self.window.name}{suffix}"

    @property
    def delay_tiles(self) -> int:
        return self.delay_s // self.window.tile_s


Feature = (
    Amount
    | Calendar
    | WindowedAggregate
    | TimeSincePrevious
    | AmountVsHistory
    | DistinctCounterparties
    | GeoVelocity
    | DelayedLabelRisk
)


def _canonical(f: Feature) -> dict[str, object]:
    body = dataclasses.asdict(f)
    # An undelayed window is what these kinds were before they had a delay: leaving the zero out keeps
    # the hashes of lists (and of the models trained on them) that use no delayed amount window.
    if isinstance(f, WindowedAggregate | AmountVsHistory) and not f.delay_s:
        del body["delay_s"]
    return body


@dataclass(frozen=True, kw_only=True, slots=True)
class FeatureList:
    """A named, ordered, hashed list of features; the exported model records name and hash."""

    name: str
    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            msg = f"feature list {self.name!r} has duplicate names: {dupes}"
            raise FeatureDefinitionError(msg)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def canonical_json(self) -> str:
        """The definitions as JSON with sorted keys: what the hash covers."""
        body = {"name": self.name, "features": [_canonical(f) for f in self.features]}
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.features)

    def __iter__(self) -> Iterator[Feature]:
        return iter(self.features)

    def index(self, name: str) -> int:
        return self.names.index(name)


def _card() -> list[Feature]:
    aggs: list[tuple[Window, tuple[Aggregate, ...]]] = [
        (W10M, ("count", "sum")),
        (W1H, ("count", "sum", "max")),
        (W1D, ("count", "sum", "mean", "max")),
        (W7D, ("count", "mean", "std", "max")),
        (W30D, ("count", "mean", "std", "min", "max")),
    ]
    out: list[Feature] = [WindowedAggregate(entity="card", agg=a, window=w) for w, aa in aggs for a in aa]
    out += [
        TimeSincePrevious(entity="card"),
        AmountVsHistory(entity="card", stat="ratio", window=W30D),
        AmountVsHistory(entity="card", stat="zscore", window=W30D),
        *(DistinctCounterparties(entity="card", window=w) for w in (W1D, W7D, W30D)),
        GeoVelocity(entity="card"),
    ]
    return out


def _terminal() -> list[Feature]:
    aggs: list[tuple[Window, tuple[Aggregate, ...]]] = [
        (W10M, ("count",)),
        (W1H, ("count", "sum")),
        (W1D, ("count", "mean")),
        (W7D, ("count", "mean")),
        (W30D, ("count", "mean", "std", "max")),
    ]
    out: list[Feature] = [WindowedAggregate(entity="terminal", agg=a, window=w) for w, aa in aggs for a in aa]
    out += [
        TimeSincePrevious(entity="terminal"),
        AmountVsHistory(entity="terminal", stat="ratio", window=W30D),
        AmountVsHistory(entity="terminal", stat="zscore", window=W30D),
        *(DistinctCounterparties(entity="terminal", window=w) for w in (W1D, W7D, W30D)),
    ]
    stats: tuple[RiskStat, ...] = ("tx_count", "fraud_count", "fraud_rate")
    out += [DelayedLabelRisk(entity="terminal", stat=s, window=w) for w in (W1D_DAYTILE, W7D, W30D) for s in stats]
    return out


def _spending_baselines() -> list[Feature]:
    """The amount against the card's own recent and delayed history, and the terminal's recent one (#22).

    The delayed baselines end 7 or 14 days back, so the spending of a card compromised in the last days
    cannot inflate the mean it is compared with. Appended after v1's features, the order they were
    selected in (the DNN's initial weights follow the column order).
    """
    stats: tuple[HistoryStat, ...] = ("ratio", "zscore")
    out: list[Feature] = [AmountVsHistory(entity="card", stat=s, window=w) for w in (W1D, W7D) for s in stats]
    out += [AmountVsHistory(entity="card", stat=s, window=W30D, delay_s=7 * DAY) for s in stats]
    out += [WindowedAggregate(entity="card", agg=a, window=W30D, delay_s=7 * DAY) for a in ("count", "mean", "std")]
    out += [AmountVsHistory(entity="card", stat=s, window=W30D, delay_s=14 * DAY) for s in stats]
    out += [AmountVsHistory(entity="terminal", stat="ratio", window=w) for w in (W1D, W7D)]
    return out


_V1_FEATURES: tuple[Feature, ...] = (
    Amount(),
    Calendar(part="hour"),
    Calendar(part="is_night"),
    Calendar(part="is_weekend"),
    *_card(),
    *_terminal(),
)

# The list before #22's spending baselines: models trained on it keep its name and hash.
FEATURE_LIST_V1 = FeatureList(name="fraudstream_v1", features=_V1_FEATURES)

FEATURE_LIST = FeatureList(name="fraudstream_v2", features=(*_V1_FEATURES, *_spending_baselines()))
