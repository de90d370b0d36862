"""Warm the online feature state with a population's past before its live traffic is streamed.

A worker that has run for months holds every card's and terminal's last 30 days in Redis, with the fraud
labels that arrived; a model's drift reference describes features computed on such state (the trainer
computes them over the whole history). A stream that starts from empty state computes other values for
its first 37 days of event time (the 30-day windows, plus the 7-day label delay of the label-risk windows):
a card's distinct terminals over 30 days are 1–3 instead of ~20, and the drift monitor rightly calls that
drift (PSI 5–9 on the distinct-counterparty features when the demo streamed from empty state).

So the demo and ``fraudstream simulate`` cut one simulated stream in two: its first ``WARM_UP_DAYS`` of
event time are applied to the online store by the same engine the worker uses (``RedisFeatureStore``: the
Lua functions, the keyed card hash, the feature key prefix), as ``features rebuild`` does from the topics;
the rest is streamed and scored. The past is neither scored nor published: it happened before the worker
was watched. The population's ids carry a per-run prefix, so this past never lands on state of an earlier
run in the same Redis (an event older than an entity's state would count as a late event).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import orjson

from config.settings import Settings
from features.simulator import SimulationConfig, Simulator

WARM_UP_DAYS = 38.0
"""The longest feature window (30 days) + the label delay of the label-risk windows (7 days) + a day."""

Record = tuple[str, bytes, bytes]
"""``("tx" | "label" | "bad", key, value)``, as ``interleave_labels`` yields them."""


@dataclass(frozen=True, slots=True)
class WarmRecord:
    """A history record handed to the rebuild's reader as if it came from a topic."""

    value: bytes
    topic: str
    partition: int
    offset: int


@dataclass
class WarmUpReport:
    transactions: int = 0
    labels: int = 0
    days: float = 0.0
    seconds: float = 0.0


def with_warm_up(config: SimulationConfig, days: float = WARM_UP_DAYS) -> tuple[SimulationConfig, int]:
    """The same simulation preceded by ``days`` of the population's history at its natural volume; returns
    the longer configuration and how many transactions the history has (they come first)."""
    if days <= 0:
        return config, 0
    per_day = Simulator(replace(config, count=1)).per_second * 86_400.0
    warm = round(days * per_day)
    shift = None if config.shift_after is None else config.shift_after + warm
    return replace(config, count=config.count + warm, shift_after=shift), warm


def take_history(records: Iterator[Record], transactions: int) -> tuple[list[bytes], list[bytes]]:
    """The first ``transactions`` transactions of ``records`` and the fraud labels known by then; ``records``
    goes on after them. Malformed records of that span are dropped (the worker changes no state for them),
    and so are labels that say "not fraud" (the online engine stores only fraud labels)."""
    tx_values: list[bytes] = []
    label_values: list[bytes] = []
    if transactions <= 0:
        return tx_values, label_values
    for kind, _key, value in records:
        if kind == "tx":
            tx_values.append(value)
            if len(tx_values) >= transactions:
                break
        elif kind == "label" and orjson.loads(value).get("is_fraud") is True:
            label_values.append(value)
    return tx_values, label_values


async def warm_up(settings: Settings, tx_values: list[bytes], label_values: list[bytes], *,
                  progress: Callable[[int, int], None] | None = None, batch_size: int = 2000) -> WarmUpReport:
    """Apply a history to the online store through the worker's engine (not scored, not published)."""
    # Imported here: the feature engine and the stream package are only needed by the commands that warm up.
    from features import RedisFeatureStore
    from features.parity import apply_history
    from streams.identity import CardHasher
    from streams.rebuild import RebuildReport, label_events, transaction_events

    started = time.perf_counter()
    client = settings.redis.client()
    store = RedisFeatureStore(client, key_prefix=settings.feature_key_prefix)
    try:
        await store.load_scripts()
        hasher = CardHasher(settings.card_hash_key())
        rejected = RebuildReport()
        # Not read from a topic: positions are the history's own (warm-up state claims no transaction ids).
        records = (WarmRecord(value, "warm-up", 0, i) for i, value in enumerate(tx_values))
        events = [event for event, _ in transaction_events(records, hasher, settings, rejected)]
        labels = label_events(label_values, hasher, settings, rejected)
        await apply_history(store, events, labels, batch_size=batch_size, keep=False, progress=progress)
    finally:
        await store.close()
        await client.aclose()
    times = [e.event_time for e in events]
    return WarmUpReport(transactions=len(events), labels=len(labels),
                        days=(max(times) - min(times)) / 86_400.0 if times else 0.0,
                        seconds=time.perf_counter() - started)
