"""The benchmark command runs end to end (tiny durations: this checks wiring, not speed)."""

from __future__ import annotations

import argparse
import json

import pytest

from fraudstream.bench.scoring import BenchConfig, run
from fraudstream.cli import bench


@pytest.mark.slow
async def test_bench_reports_the_contract_fields() -> None:
    result = await run(BenchConfig(seconds=0.2))
    for key in ("batched_rows_per_s", "per_call_rows_per_s", "speedup", "local_rows_per_s"):
        assert result[key] > 0
    assert result["speedup"] == pytest.approx(result["batched_rows_per_s"] / result["per_call_rows_per_s"], rel=0.01)
    json.dumps(result)


def test_bench_scoring_subcommand_is_registered() -> None:
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "scoring", "--json", "--seconds", "1"])
    assert args.json and args.seconds == 1.0 and callable(args.handler)
