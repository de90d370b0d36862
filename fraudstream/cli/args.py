"""Argument types of the ``fraudstream`` commands: a negative count, a rate of zero or a port out of range is
a usage error caught by argparse (exit 2 with the command's usage line), not a failure half-way through."""

from __future__ import annotations

import argparse
import math
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


def positive_int(text: str) -> int:
    """A count that must be at least 1."""
    value = int(_number(text, int))
    if value < 1:
        msg = f"must be at least 1, not {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def non_negative_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        msg = f"must be 0 or more, not {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def positive_float(text: str) -> float:
    """A rate, a duration or a size that must be above zero."""
    value = float(_number(text, float))
    if value <= 0:
        msg = f"must be above 0, not {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def non_negative_float(text: str) -> float:
    value = float(_number(text, float))
    if value < 0:
        msg = f"must be 0 or more, not {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def share(text: str) -> float:
    """A fraction between 0 and 1."""
    value = float(_number(text, float))
    if not 0.0 <= value <= 1.0:
        msg = f"must be a share between 0 and 1, not {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def tcp_port(text: str) -> int:
    """A TCP port; 0 lets the system pick a free one."""
    value = int(_number(text, int))
    if not 0 <= value <= 65535:
        msg = f"must be a TCP port between 0 and 65535 (0 = any free port), not {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


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
    if text.startswith("kafka://") or text.startswith("sim:"):
        return Path(text)
    return existing_file(text)
