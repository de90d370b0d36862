"""Sub-commands of this concern (filled in by its package's work)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's sub-commands to the ``fraudstream`` parser."""
