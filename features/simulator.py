"""A seeded generator of card traffic with realistic fraud patterns (after the Fraud Detection Handbook's
simulator, plus card-testing bursts and impossible travel). It lives beside the fdh reader
(``features/history.py``) because both ends use it: the trainer's ``sim:`` histories and the shell's live
traffic (``fraudstream simulate``, the demo, the benchmarks).

Cards live on a 100×100 grid and shop at terminals within distance 5 of home; grid units map to degrees as
in ``--mapping fdh`` (latitude = 50 + y/100, longitude = 4 + x/100). Event times run on a simulated clock
at the population's natural volume, ending at ``end`` (default: now), so windows see realistic history.

``seed`` draws the population (card homes, spending habits, terminal locations); ``events_seed`` draws
what happens (which card buys when, where, how much; which terminals and cards get compromised). The same
``seed`` with another ``events_seed`` is the same customers on other days: the trainer's history
(``sim:`` inputs, events seed 1 by default) and the live traffic (``simulate``, ``demo``: events seed 0)
describe one population. Random numbers are drawn in blocks (one numpy call per 4,096 values, not one per
value): 29 µs of CPU per transaction instead of 145-152 (old and new alternated, 30,000 transactions each,
on the loaded 2-core development machine), so a 300,000-transaction history takes seconds.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Iterator
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
    events_seed: int = 0
    """The event stream of the population drawn from ``seed`` (see the module's docstring)."""
    entity_prefix: str = ""
    """Prepended to card and terminal ids: the same population under ids of its own (one demo run's
    feature state never mixes with another's in a shared Redis)."""


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


class _Draws:
    """Uniform and standard-normal numbers drawn a block at a time, handed out one by one."""

    BLOCK = 4096

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._uniform: list[float] = []
        self._normal: list[float] = []

    def uniform(self) -> float:
        if not self._uniform:
            self._uniform = self.rng.random(self.BLOCK).tolist()
        return self._uniform.pop()

    def normal(self, mean: float, std: float) -> float:
        if not self._normal:
            self._normal = self.rng.standard_normal(self.BLOCK).tolist()
        return mean + std * self._normal.pop()

    def exponential(self, mean: float) -> float:
        return -mean * math.log(1.0 - self.uniform())

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        return min(int(self.uniform() * n), n - 1)

    def between(self, low: float, high: float) -> float:
        return low + (high - low) * self.uniform()


class Simulator:
    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        population = np.random.default_rng(config.seed)
        self.home = population.uniform(0, 100, size=(config.cards, 2))
        self.mean_amount = population.uniform(5, 100, size=config.cards)
        self.tx_per_day = population.uniform(0, 4, size=config.cards)
        self.terminal_xy = population.uniform(0, 100, size=(config.terminals, 2))
        self.nearby = [self._terminals_near(self.home[c]).tolist() for c in range(config.cards)]
        self.card_cdf = np.cumsum(self.tx_per_day / self.tx_per_day.sum()).tolist()
        self.per_second = float(self.tx_per_day.sum()) / 86_400.0
        self.rng = np.random.default_rng((config.seed, config.events_seed))
        self.draws = _Draws(self.rng)
        end = (config.end or datetime.now(UTC)).timestamp()
        self.start = end - config.count / self.per_second
        self.compromised_terminals: dict[int, float] = {}
        self.compromised_cards: dict[int, float] = {}
        self.last_day = -1
        self._card_ids = [f"{config.entity_prefix}card-{c:06d}" for c in range(config.cards)]
        self._terminal_ids = [f"{config.entity_prefix}term-{t:06d}" for t in range(config.terminals)]
        self._terminal_latlon = [grid_to_latlon(x, y) for x, y in self.terminal_xy.tolist()]
        self._mean_amount = self.mean_amount.tolist()

    @property
    def days(self) -> float:
        """The simulated clock span of ``count`` transactions at the population's natural volume."""
        return self.config.count / self.per_second / 86_400.0

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
        cfg, draws = self.config, self.draws
        mean_gap = 1.0 / self.per_second
        cdf = self.card_cdf
        now = self.start
        index = 0
        while index < cfg.count:
            self._shifted = cfg.shift_after is not None and index >= cfg.shift_after
            now += draws.exponential(mean_gap)
            day = int(now // 86_400)
            if day != self.last_day:
                self._new_day(day, now)
            burst = draws.uniform()
            if burst < 0.0005:
                for tx in self._card_testing_burst(now, index):
                    index += 1
                    yield tx
                continue
            card = min(bisect.bisect_right(cdf, draws.uniform() * cdf[-1]), cfg.cards - 1)
            if burst < 0.0010:
                yield self._impossible_travel(card, now, index)
            else:
                yield self._ordinary(card, now, index)
            index += 1

    def _payload(self, index: int, card: int, terminal: int, amount: float, now: float) -> dict[str, object]:
        lat, lon = self._terminal_latlon[terminal]
        return {
            "transaction_id": f"{self.config.id_prefix}-{index}",
            "card_id": self._card_ids[card],
            "terminal_id": self._terminal_ids[terminal],
            "amount": round(float(amount), 2),
            "currency": "EUR",
            "event_time": _iso(now),
            "latitude": round(lat, 6),
            "longitude": round(lon, 6),
        }

    def _ordinary(self, card: int, now: float, index: int) -> SimulatedTransaction:
        draws = self.draws
        nearby = self.nearby[card]
        terminal = nearby[draws.below(len(nearby))]
        mean = self._mean_amount[card] * (2.5 if self._shifted else 1.0)  # the shift: a currency change
        amount = max(0.01, draws.normal(mean, mean / 2))
        scenario: Scenario = 0
        if amount > 220:
            scenario = 1
        elif self.compromised_terminals.get(terminal, 0) > now:
            scenario = 2
        elif self.compromised_cards.get(card, 0) > now and draws.uniform() < 1 / 3:
            amount *= 5
            scenario = 3
        return SimulatedTransaction(self._payload(index, card, terminal, amount, now), scenario > 0, scenario, now)

    def _card_testing_burst(self, now: float, index: int) -> Iterator[SimulatedTransaction]:
        draws = self.draws
        card = draws.below(self.config.cards)
        for step in range(5 + draws.below(6)):
            terminal = draws.below(self.config.terminals)
            at = now + step * draws.between(5, 40)
            yield SimulatedTransaction(
                self._payload(index + step, card, terminal, draws.between(0.5, 3.0), at), True, 4, at
            )

    def _impossible_travel(self, card: int, now: float, index: int) -> SimulatedTransaction:
        far = np.flatnonzero(np.hypot(*(self.terminal_xy - self.home[card]).T) > 60)
        draws = self.draws
        terminal = int(far[draws.below(far.size)]) if far.size else draws.below(self.config.terminals)
        amount = draws.between(50, 200)
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


def interleave_labels(simulator: Simulator, end: float,
                      on_transaction: Callable[[SimulatedTransaction], None] | None = None,
                      ) -> Iterator[tuple[str, bytes, bytes]]:
    """Yield ``("tx"|"label"|"bad", key, value)`` in event-time order; a label appears once it is known
    (``available_at``) and only if known by ``end``. ``on_transaction`` sees each transaction (with its
    ground truth) just before it is yielded."""
    pending: list[_Pending] = []
    rng = np.random.default_rng(simulator.config.seed + 1)
    bad_index = 0
    for tx in simulator.transactions():
        if on_transaction is not None:
            on_transaction(tx)
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
