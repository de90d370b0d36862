"""Traffic sources: the history replay, the warm-up and the batched producer behind them (the simulator they
send is ``features/simulator.py``, which the trainer reads history from too)."""

from __future__ import annotations

import re
import secrets


def run_prefix(base: str) -> str:
    """A transaction-id prefix of its own for one run (``sim-3f9a1c2x``): two runs never send one id with
    two contents, which the worker would dead-letter as a conflict. The token ends in a letter: an all-digit
    token followed by ``-<index>`` would make a long digit run that the card-number rule reads across the
    dash (``12345678-901234``), and now and then calls a card number."""
    return f"{base}-{secrets.token_hex(4)[:7]}{secrets.choice('ghjkmnpqrstvwxyz')}"


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot start transaction ids (they allow ``A-Z a-z 0-9 _ . : -``, 64 at most), or None."""
    if re.fullmatch(r"[A-Za-z0-9_.:\-]{0,40}", prefix):
        return None
    return f"--id-prefix {prefix[:50]!r}: use at most 40 of A-Z a-z 0-9 _ . : - (transaction ids allow no more)"
