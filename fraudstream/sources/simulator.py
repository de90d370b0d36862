"""A seeded generator of card traffic with realistic fraud patterns (after the Fraud Detection Handbook's
simulator, plus card-testing bursts and impossible travel).

Cards live on a 100×100 grid and shop at terminals within distance 5 of home; grid units map to degrees as
in ``--mapping fdh`` (latitude = 50 + y/100, longitude = 4 + x/100). Event times run on a simulated clock
at the population's natural volume, ending at ``end`` (default: now), so windows see realistic history.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import orjson

Scenario = int  # 0 genuine, 1 large amount, 2 compromised terminal, 3 compromised card, 4 card testing, 5 travel


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    count: int
    seed: int = 0
    cards: int = 2000
    terminals: int = 4000
    end: datetime | None = None
    shift_after: int | None = None
    label_delay_s: float = 7 * 86_400.0
    invalid_share: float = 0.0
    id_prefix: str = "sim"


@dataclass(frozen=True, slots=True)
class SimulatedTransaction:
    payload: dict[str, object]
    is_fraud: bool
    scenario: Scenario
    event_time: float


@dataclass(frozen=True, slots=True)
class SimulatedLabel:
    payload: dict[str, object]
    available_at: float


@dataclass(order=True)
class _Pending:
    available_at: float
    label: SimulatedLabel = field(compare=False)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def grid_to_latlon(x: float, y: float) -> tuple[float, float]:
    return 50.0 + y * 0.01, 4.0 + x * 0.01


class Simulator:
    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        rng = self.rng
        self.home = rng.uniform(0, 100, size=(config.cards, 2))
        self.mean_amount = rng.uniform(5, 100, size=config.cards)
        self.tx_per_day = rng.uniform(0, 4, size=config.cards)
        self.terminal_xy = rng.uniform(0, 100, size=(config.terminals, 2))
        self.nearby = [self._terminals_near(self.home[c]) for c in range(config.cards)]
        self.card_weights = self.tx_per_day / self.tx_per_day.sum()
        self.per_second = self.tx_per_day.sum() / 86_400.0
        end = (config.end or datetime.now(UTC)).timestamp()
        self.start = end - config.count / self.per_second
        self.compromised_terminals: dict[int, float] = {}
        self.compromised_cards: dict[int, float] = {}
        self.last_day = -1

    def _terminals_near(self, xy: np.ndarray) -> np.ndarray:
        distance = np.hypot(*(self.terminal_xy - xy).T)
        near = np.flatnonzero(distance < 5)
        return near if near.size else np.array([int(distance.argmin())])

    def _new_day(self, day: int, now: float) -> None:
        # Each day a few terminals (for 28 days) and cards (for 14 days) become compromised.
        shifted = self._shifted
        for t in self.rng.choice(self.config.terminals, size=4 if shifted else 2, replace=False):
            self.compromised_terminals[int(t)] = now + 28 * 86_400
        for c in self.rng.choice(self.config.cards, size=6 if shifted else 3, replace=False):
            self.compromised_cards[int(c)] = now + 14 * 86_400
        self.last_day = day

    _shifted = False

    def transactions(self) -> Iterator[SimulatedTransaction]:
        rng, cfg = self.rng, self.config
        now = self.start
        index = 0
        while index < cfg.count:
            self._shifted = cfg.shift_after is not None and index >= cfg.shift_after
            now += rng.exponential(1.0 / self.per_second)
            day = int(now // 86_400)
            if day != self.last_day:
                self._new_day(day, now)
            burst = rng.random()
            if burst < 0.0005:
                for tx in self._card_testing_burst(now, index):
                    index += 1
                    yield tx
                continue
            card = int(rng.choice(cfg.cards, p=self.card_weights))
            if burst < 0.0010:
                yield self._impossible_travel(card, now, index)
            else:
                yield self._ordinary(card, now, index)
            index += 1

    def _payload(self, index: int, card: int, terminal: int, amount: float, now: float) -> dict[str, object]:
        lat, lon = grid_to_latlon(*self.terminal_xy[terminal])
        return {
            "transaction_id": f"{self.config.id_prefix}-{index}",
            "card_id": f"card-{card:06d}",
            "terminal_id": f"term-{terminal:06d}",
            "amount": round(float(amount), 2),
            "currency": "EUR",
            "event_time": _iso(now),
            "latitude": round(float(lat), 6),
            "longitude": round(float(lon), 6),
        }

    def _ordinary(self, card: int, now: float, index: int) -> SimulatedTransaction:
        rng = self.rng
        terminal = int(rng.choice(self.nearby[card]))
        mean = self.mean_amount[card] * (2.5 if self._shifted else 1.0)  # the shift: a currency change
        amount = max(0.01, float(rng.normal(mean, mean / 2)))
        scenario: Scenario = 0
        if amount > 220:
            scenario = 1
        elif self.compromised_terminals.get(terminal, 0) > now:
            scenario = 2
        elif self.compromised_cards.get(card, 0) > now and rng.random() < 1 / 3:
            amount *= 5
            scenario = 3
        return SimulatedTransaction(self._payload(index, card, terminal, amount, now), scenario > 0, scenario, now)

    def _card_testing_burst(self, now: float, index: int) -> Iterator[SimulatedTransaction]:
        rng = self.rng
        card = int(rng.integers(self.config.cards))
        for step in range(int(rng.integers(5, 11))):
            terminal = int(rng.integers(self.config.terminals))
            at = now + step * rng.uniform(5, 40)
            yield SimulatedTransaction(
                self._payload(index + step, card, terminal, rng.uniform(0.5, 3.0), at), True, 4, at
            )

    def _impossible_travel(self, card: int, now: float, index: int) -> SimulatedTransaction:
        far = np.flatnonzero(np.hypot(*(self.terminal_xy - self.home[card]).T) > 60)
        terminal = int(self.rng.choice(far)) if far.size else int(self.rng.integers(self.config.terminals))
        amount = self.rng.uniform(50, 200)
        return SimulatedTransaction(self._payload(index, card, terminal, amount, now), True, 5, now)

    def label_for(self, tx: SimulatedTransaction) -> SimulatedLabel:
        available = tx.event_time + self.config.label_delay_s
        payload = {
            "transaction_id": tx.payload["transaction_id"],
            "card_id": tx.payload["card_id"],
            "terminal_id": tx.payload["terminal_id"],
            "event_time": tx.payload["event_time"],
            "available_at": _iso(available),
            "is_fraud": tx.is_fraud,
            "source": "simulator",
        }
        return SimulatedLabel(payload, available)


_BASE = b'"transaction_id": "%s", "card_id": "c1", "terminal_id": "t1"'
INVALID_RECORDS: list[bytes] = [
    b"{" + _BASE + b', "amount": -5, "event_time": "2024-01-01T00:00:00Z"}',
    b"{" + _BASE + b', "amount": 12.5, "currency": "XXX", "event_time": "2024-01-01T00:00:00Z"}',
    b'{"transaction_id": "%s", "card_id": "c1", "amount": 12.5, "event_time": "2024-01-01T00:00:00Z"}',
    b"{" + _BASE + b', "amount": 12.5, "event_time": "2100-01-01T00:00:00Z"}',
    b"not json at all: %s",
    b"{" + _BASE + b', "amount": NaN, "event_time": "2024-01-01T00:00:00Z"}',
]


def invalid_record(index: int, prefix: str) -> bytes:
    template = INVALID_RECORDS[index % len(INVALID_RECORDS)]
    return template.replace(b"%s", f"{prefix}-bad-{index}".encode())


def interleave_labels(simulator: Simulator, end: float) -> Iterator[tuple[str, bytes, bytes]]:
    """Yield ``("tx"|"label"|"bad", key, value)`` in event-time order; a label appears once it is known
    (``available_at``) and only if known by ``end``."""
    pending: list[_Pending] = []
    rng = np.random.default_rng(simulator.config.seed + 1)
    bad_index = 0
    for tx in simulator.transactions():
        while pending and pending[0].available_at <= tx.event_time:
            label = heapq.heappop(pending).label
            yield "label", str(label.payload["card_id"]).encode(), orjson.dumps(label.payload)
        if simulator.config.invalid_share and rng.random() < simulator.config.invalid_share:
            yield "bad", b"bad", invalid_record(bad_index, simulator.config.id_prefix)
            bad_index += 1
        yield "tx", str(tx.payload["card_id"]).encode(), orjson.dumps(tx.payload)
        heapq.heappush(pending, _Pending(tx.event_time + simulator.config.label_delay_s, simulator.label_for(tx)))
    while pending and pending[0].available_at <= end:
        label = heapq.heappop(pending).label
        yield "label", str(label.payload["card_id"]).encode(), orjson.dumps(label.payload)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance, used by tests to check impossible travel is really impossible."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(a))
