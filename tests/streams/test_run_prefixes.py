"""``simulate`` and ``replay`` give each run its own transaction ids unless ``--id-prefix`` is given."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from config.settings import Topics
from fraudstream.sources import prefix_problem, run_prefix
from fraudstream.sources.replay import replay_records
from schemas.pan import has_pan
from tests.fixtures.simulated import simulated_fdh


def test_run_prefixes_differ_and_end_in_a_letter() -> None:
    prefixes = {run_prefix("sim") for _ in range(200)}
    assert len(prefixes) == 200
    assert all(re.fullmatch(r"sim-[0-9a-f]{7}[a-z]", p) for p in prefixes)
    # an all-digit token would glue to the index across the dash: never a card number by construction
    assert not any(has_pan(f"{p}-{n}") for p in prefixes for n in (1234567, 98765432))


def test_an_id_prefix_transactions_cannot_carry_is_refused() -> None:
    assert prefix_problem("ok-1.2:3_x") is None
    assert prefix_problem("") is None
    assert prefix_problem("with space") is not None and prefix_problem("x" * 41) is not None


def test_replay_prefixes_transactions_and_their_labels_alike(tmp_path: Path) -> None:
    path = tmp_path / "history.parquet"
    simulated_fdh(path, days=12, cards=20, seed=1)
    records = list(replay_records(str(path), Topics(), id_prefix="replay-abc1234x"))
    tx_ids = [orjson.loads(r.value)["transaction_id"] for r in records if r.topic == Topics().transactions]
    label_ids = [orjson.loads(r.value)["transaction_id"] for r in records if r.topic == Topics().labels]
    assert tx_ids and label_ids
    assert all(re.fullmatch(r"replay-abc1234x-\d+", t) for t in tx_ids + label_ids)
    assert set(label_ids) <= set(tx_ids)
    plain = list(replay_records(str(path), Topics(), id_prefix=""))
    assert {orjson.loads(r.value)["transaction_id"] for r in plain if r.topic == Topics().transactions} == {
        t.removeprefix("replay-abc1234x-") for t in tx_ids}
