"""Validation benchmark: the card-number rule's false positives on realistic identifiers, and the worker's
per-record validation cost with and without the new checks, measured in the same run.

    .venv/bin/python -m fraudstream.bench.validation --json [--input /path/to/fdh.parquet] [--samples N]

False positives: the share of identifiers the rule (schemas/pan.py: 13-19 digits, Luhn AND a network's
IIN range and length) calls a card number, next to what Luhn alone would call one, on the fdh file's ids
(with ``--input``), random 15- and 16-digit merchant numbers, 8-character terminal ids and the simulator's
transaction ids. Cost: CPU microseconds per record of the worker's validation stage, the previous code
(``decode`` without the card-number check, card hash, feature event) against the current one (the same
plus the check of the string fields and the content fingerprint), alternating A/B rounds over the same
records; and the two additions on their own.
Progress goes to stderr; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from features.events import TransactionEvent
from features.simulator import SimulationConfig, Simulator
from fraudstream.sources import run_prefix
from schemas import Transaction, transaction_context
from schemas.codec import CARD_FIELDS, _pan_in_record, decode
from schemas.pan import PAN_MAX, PAN_MIN, has_pan, luhn_valid
from streams.identity import CardHasher, content_hash


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rates(ids: list[str]) -> dict[str, float | int]:
    luhn = sum(1 for i in ids if i.isdigit() and PAN_MIN <= len(i) <= PAN_MAX and luhn_valid(i))
    flagged = sum(1 for i in ids if has_pan(i))
    return {"n": len(ids), "flagged": flagged, "flagged_share": flagged / len(ids),
            "luhn_only_share": luhn / len(ids)}


def false_positives(samples: int, fdh: str | None, rng: random.Random) -> dict[str, object]:
    out: dict[str, object] = {}
    if fdh:
        import pandas as pd

        frame = pd.read_parquet(fdh, columns=["TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID"])
        for column in frame.columns:
            values = frame[column].astype(str).unique().tolist()
            out[f"fdh_{column.lower()}"] = rates(values)
    out["merchant_id_15_digits"] = rates([f"{rng.randrange(10**14, 10**15)}" for _ in range(samples)])
    out["merchant_id_16_digits"] = rates([f"{rng.randrange(10**15, 10**16)}" for _ in range(samples)])
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    out["terminal_id_8_chars"] = rates(["".join(rng.choice(alnum) for _ in range(8)) for _ in range(samples)])
    out["terminal_id_8_digits"] = rates([f"{rng.randrange(10**8):08d}" for _ in range(samples)])
    # the simulator's ids (run_prefix: a token ending in a letter) and what an all-digit token would give
    out["simulator_transaction_id"] = rates([f"{run_prefix('sim')}-{i}" for i in range(samples)])
    out["digits_dash_digits_8_6"] = rates([f"{rng.randrange(10**8):08d}-{rng.randrange(10**6):06d}"
                                           for _ in range(samples)])
    return out


def records(count: int) -> list[bytes]:
    """The simulator's transactions as the worker reads them (ids like ``sim-3f9a1c2e-1234``)."""
    simulator = Simulator(SimulationConfig(count=count, seed=11, id_prefix="sim-3f9a1c2e"))
    return [orjson.dumps(t.payload) for t in simulator.transactions()]


NO_CHECK = frozenset(Transaction.model_fields)
"""Every field allowed to hold a card number: ``decode`` then does what it did before the check existed."""


def previous(raw: list[bytes], hasher: CardHasher, context: dict[str, object]) -> None:
    """The validation stage before this change: ``decode`` without the card-number check, card hash,
    feature event."""
    for value in raw:
        tx = decode(Transaction, value, max_bytes=64 * 1024, context=context, pan_allowed=NO_CHECK)
        assert isinstance(tx, Transaction)
        TransactionEvent(transaction_id=tx.transaction_id, card_ref=hasher.reference(tx.card_id),
                         terminal_id=tx.terminal_id, event_time=tx.event_time.timestamp(), amount=tx.amount,
                         latitude=tx.latitude, longitude=tx.longitude)


def current(raw: list[bytes], hasher: CardHasher, context: dict[str, object]) -> None:
    """Today's: ``decode`` (with the card-number check) and the content fingerprint on top."""
    for value in raw:
        tx = decode(Transaction, value, max_bytes=64 * 1024, context=context)
        assert isinstance(tx, Transaction)
        card_ref = hasher.reference(tx.card_id)
        event_time = tx.event_time.timestamp()
        TransactionEvent(transaction_id=tx.transaction_id, card_ref=card_ref, terminal_id=tx.terminal_id,
                         event_time=event_time, amount=tx.amount, latitude=tx.latitude, longitude=tx.longitude)
        content_hash(card_ref, tx.terminal_id, tx.amount, tx.currency, event_time, tx.latitude, tx.longitude)


def alternate(runs: dict[str, Callable[[], None]], rounds: int, per_round: int) -> dict[str, list[float]]:
    """CPU µs per record of each variant, round by round, in alternating order."""
    out: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name in (list(runs) if r % 2 == 0 else list(reversed(runs))):
            t0 = time.process_time()
            runs[name]()
            out[name].append((time.process_time() - t0) / per_round * 1e6)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    parser.add_argument("--input", default=None, help="the fdh Parquet file, for the false positives on its ids")
    parser.add_argument("--samples", type=int, default=1_000_000, help="random identifiers per kind")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    rng = random.Random(17)
    load_before = os.getloadavg()
    log(f"false positives on {args.samples:,} random identifiers per kind")
    fp = false_positives(args.samples, args.input, rng)
    raw = records(args.records)
    hasher = CardHasher(b"bench-secret")
    context = transaction_context(datetime.now(UTC), 86_400.0)
    previous(raw, hasher, context)  # warm the hasher's cache and pydantic alike for both variants
    log(f"validation cost: {args.rounds} alternating rounds of {len(raw):,} records")
    # A fresh hasher per round: the card-hash cache would otherwise make every round after the first cheaper.
    cost = alternate({
        "previous": lambda: previous(raw, CardHasher(b"bench-secret"), context),
        "current": lambda: current(raw, CardHasher(b"bench-secret"), context),
    }, args.rounds, len(raw))
    median = {k: statistics.median(v) for k, v in cost.items()}
    # The records are valid by construction (``records``): each decodes to a Transaction.
    txs = [t for t in (decode(Transaction, v, max_bytes=64 * 1024, context=context) for v in raw)
           if isinstance(t, Transaction)]

    def pan_check() -> None:
        _ = [_pan_in_record(t, CARD_FIELDS) for t in txs]

    def hash_contents() -> None:
        _ = [content_hash("0" * 32, t.terminal_id, t.amount, t.currency, t.event_time.timestamp(), t.latitude,
                          t.longitude) for t in txs]

    parts = alternate({"pan_check": pan_check, "content_hash": hash_contents}, args.rounds, len(raw))
    result = {
        "false_positives": fp,
        "validate_us_per_record_previous": round(median["previous"], 3),
        "validate_us_per_record_current": round(median["current"], 3),
        "validate_cost_ratio": round(median["current"] / median["previous"], 3),
        "pan_check_us_per_record": round(statistics.median(parts["pan_check"]), 3),
        "content_hash_us_per_record": round(statistics.median(parts["content_hash"]), 3),
        "rounds_us_per_record": {k: [round(x, 3) for x in v] for k, v in cost.items()},
        "records": len(raw),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
