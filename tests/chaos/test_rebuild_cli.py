"""``fraudstream features rebuild`` is wired into the CLI next to whatever ``features`` already offers."""

from __future__ import annotations

import argparse

from fraudstream.cli import build_parser, reliability


def test_rebuild_parses_with_its_options() -> None:
    args = build_parser().parse_args(["features", "rebuild", "--replace", "--verify", "--batch-size", "500"])
    assert args.replace and args.verify and args.batch_size == 500 and args.tolerance == 1e-6
    assert args.handler.__name__ == "_rebuild"


def test_rebuild_joins_an_existing_features_command() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    features = commands.add_parser("features")
    sub = features.add_subparsers(dest="features_command", required=True)
    sub.add_parser("parity").set_defaults(handler="parity")
    reliability.register(commands)
    assert parser.parse_args(["features", "parity"]).handler == "parity"
    assert parser.parse_args(["features", "rebuild"]).handler.__name__ == "_rebuild"
