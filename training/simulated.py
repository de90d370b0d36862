"""Training history from the project's own simulator (``sim:`` inputs), the generator of the live traffic.

``sim:300000`` is 300,000 transactions of the default population (2,000 cards, 4,000 terminals, seed 0),
about 75 days at its natural volume, ending now; options follow a ``?``::

    sim:300000?seed=0&events=1&cards=2000&terminals=4000&label_delay_days=7

``seed`` draws the population and ``events`` its event stream (see ``features.simulator``): the
history defaults to events seed 1 and live traffic (``fraudstream simulate``, the demo) to 0, so the model
learns on the same customers it then scores, on other days. Every transaction gets a label that becomes
known ``label_delay_days`` after it (7, as in the live stream); the offline engine uses a label only from
then on, as the worker does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import numpy as np
import pandas as pd

from features.simulator import SimulationConfig, Simulator
from training.errors import DatasetError

SCHEME = "sim:"
DEFAULT_HISTORY_TRANSACTIONS = 300_000
"""75 days of the default population: the default training window (7 days, 21 days before the end) then
has 37 days of history before it, enough for the 30-day windows and the 7-day label delay, as a
long-running worker has. Simulated, featured and trained (``--quick``) in about a minute on 2 cores."""
DEFAULT_HISTORY = f"{SCHEME}{DEFAULT_HISTORY_TRANSACTIONS}"
HISTORY_EVENTS_SEED = 1
_INT_OPTIONS = {"seed": "seed", "events": "events_seed", "cards": "cards", "terminals": "terminals",
                "shift_after": "shift_after"}


@dataclass(frozen=True)
class SimulatedHistory:
    config: SimulationConfig

    @property
    def spec(self) -> str:
        c = self.config
        return (f"{SCHEME}{c.count}?seed={c.seed}&events={c.events_seed}&cards={c.cards}&terminals={c.terminals}"
                f"&label_delay_days={c.label_delay_s / 86_400:g}")


def is_simulated_source(path: object) -> bool:
    return str(path).startswith(SCHEME)


def parse_spec(text: str, *, end: datetime | None = None) -> SimulatedHistory:
    """``sim:COUNT[?option=value&…]`` → the simulation it describes (a ``DatasetError`` says what is wrong)."""
    body = str(text)[len(SCHEME):].lstrip("/")
    count_text, _, query = body.partition("?")
    if not count_text.strip().isdigit() or int(count_text) <= 0:
        msg = f"{text!r}: write a simulated history as sim:COUNT (a positive number of transactions)"
        raise DatasetError(msg)
    options: dict[str, object] = {"count": int(count_text), "events_seed": HISTORY_EVENTS_SEED, "end": end}
    for key, value in parse_qsl(query, keep_blank_values=True):
        try:
            if key in _INT_OPTIONS:
                options[_INT_OPTIONS[key]] = int(value)
            elif key == "label_delay_days":
                options["label_delay_s"] = float(value) * 86_400.0
            else:
                known = ", ".join([*_INT_OPTIONS, "label_delay_days"])
                msg = f"{text!r}: unknown option {key!r} (known: {known})"
                raise DatasetError(msg)
        except ValueError as exc:
            msg = f"{text!r}: option {key}={value!r} is not a number"
            raise DatasetError(msg) from exc
    config = SimulationConfig(**options)  # type: ignore[arg-type]
    if config.cards < 10 or config.terminals < 10:
        msg = f"{text!r}: a population needs at least 10 cards and 10 terminals"
        raise DatasetError(msg)
    return SimulatedHistory(config)


def load_simulated(spec: str, limit: int | None = None, *, progress: Callable[[str], None] | None = None,
                   end: datetime | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(transactions, labels)`` in the ``load_fdh`` form, simulated as ``spec`` says, ending at ``end``
    (default now); ``limit`` keeps the first N transactions."""
    history = parse_spec(spec, end=end or datetime.now(UTC))
    started = time.perf_counter()
    simulator = Simulator(history.config)
    columns: dict[str, list[object]] = {k: [] for k in ("transaction_id", "card_ref", "terminal_id", "event_time",
                                                         "amount", "latitude", "longitude", "is_fraud")}
    for index, tx in enumerate(simulator.transactions()):
        if limit is not None and index >= limit:
            break
        p = tx.payload
        columns["transaction_id"].append(p["transaction_id"])
        columns["card_ref"].append(p["card_id"])
        columns["terminal_id"].append(p["terminal_id"])
        # The event time as the worker reads it from the payload's ISO text (whole microseconds).
        columns["event_time"].append(datetime.fromtimestamp(tx.event_time, UTC).timestamp())
        columns["amount"].append(p["amount"])
        columns["latitude"].append(p["latitude"])
        columns["longitude"].append(p["longitude"])
        columns["is_fraud"].append(tx.is_fraud)
    is_fraud = np.asarray(columns.pop("is_fraud"), dtype=bool)
    transactions = pd.DataFrame(columns)
    transactions["event_time"] = transactions["event_time"].astype(np.float64)
    transactions["amount"] = transactions["amount"].astype(np.float64)
    # Rows stay in the order the live stream sends them (a card-testing burst is drawn ahead of the clock,
    # so a few events arrive late, as they do at the worker): the offline engine takes that order as
    # arrival order.
    labels = transactions[["transaction_id", "card_ref", "terminal_id", "event_time"]].copy()
    labels["available_at"] = labels["event_time"] + history.config.label_delay_s
    labels["is_fraud"] = is_fraud
    if progress is not None:
        times = transactions["event_time"]
        days = (times.max() - times.min()) / 86_400
        progress(f"simulated {len(transactions):,} transactions ({days:.0f} days, {is_fraud.mean():.2%} fraud) "
                 f"in {time.perf_counter() - started:.1f}s from {history.spec}")
    return transactions, labels
