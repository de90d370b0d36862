"""Argument types of the ``fraudstream`` commands: a negative count, a rate of zero or a port out of range is
a usage error caught by argparse (exit 2 with the command's usage line), not a failure half-way through."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path


def _number(text: str, kind: type[int] | type[float]) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        msg = f"{text!r} is not {what}"
        raise argparse.ArgumentTypeError(msg) from None
    if isinstance(value, float) and not math.isfinite(value):
        msg = f"{text!r} is not a finite number"
        raise argparse.ArgumentTypeError(msg)
    return value


def _checked(kind: type[int] | type[float], ok: Callable[[float], bool], rule: str
             ) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = _number(text, kind)
        if not ok(value):
            msg = f"{rule}, not {text}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "must be at least 1")
_non_negative_int = _checked(int, lambda v: v >= 0, "must be 0 or more")
_tcp_port = _checked(int, lambda v: 0 <= v <= 65535, "must be a TCP port between 0 and 65535 (0 = any free port)")


def positive_int(text: str) -> int:
    """A count that must be at least 1."""
    return int(_positive_int(text))


def non_negative_int(text: str) -> int:
    return int(_non_negative_int(text))


def tcp_port(text: str) -> int:
    """A TCP port; 0 lets the system pick a free one."""
    return int(_tcp_port(text))


positive_float = _checked(float, lambda v: v > 0, "must be above 0")
"""A rate, a duration or a size that must be above zero."""
non_negative_float = _checked(float, lambda v: v >= 0, "must be 0 or more")
share = _checked(float, lambda v: 0.0 <= v <= 1.0, "must be a share between 0 and 1")
"""A fraction between 0 and 1."""


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        msg = f"cannot read {text}: no such file"
        raise argparse.ArgumentTypeError(msg)
    if path.is_dir():
        msg = f"{text} is a directory, not a file"
        raise argparse.ArgumentTypeError(msg)
    return path


def history_input(text: str) -> Path:
    """A history file that exists, or ``kafka://host:port`` (the topics, replayed)."""
    if text.startswith("sim:"):
        from training.errors import DatasetError
        from training.simulated import parse_spec

        try:
            parse_spec(text)  # a malformed spec is a usage error, like a missing file
        except DatasetError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return Path(text)
    if text.startswith("kafka://"):
        return Path(text)
    return existing_file(text)
