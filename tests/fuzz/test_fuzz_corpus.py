"""The fuzz test's own accounting (no broker): a corpus copy whose records never reached the output is
noticed, because every copy carries its own transaction ids."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas import Transaction, transaction_context
from schemas.codec import Rejection, decode
from tests.fixtures.corpus import CORPUS_COPIES, MAX_MESSAGE, corpus_copies, unaccounted


def test_a_corpus_copy_that_was_never_scored_is_noticed() -> None:
    values = corpus_copies("unit")
    per_copy = len(values) // CORPUS_COPIES
    context = transaction_context(datetime.now(UTC), 86_400.0)
    parsed = [decode(Transaction, v, max_bytes=MAX_MESSAGE, context=context) for v in values]
    positions = [("transactions", 0, offset) for offset in range(len(values))]
    ids = [[p.transaction_id for p in parsed[k * per_copy:(k + 1) * per_copy] if not isinstance(p, Rejection)]
           for k in range(CORPUS_COPIES)]
    assert all(ids), "every copy holds records that are scored"
    assert len({i for copy in ids for i in set(copy)}) == sum(len(set(copy)) for copy in ids), "ids shared by copies"

    lost = range(2 * per_copy, 3 * per_copy)  # the third copy's scored records never arrived
    dead = {positions[i]: {} for i, p in enumerate(parsed) if isinstance(p, Rejection)}
    scored = {p.transaction_id: {} for i, p in enumerate(parsed) if not isinstance(p, Rejection) and i not in lost}
    missing = unaccounted(values, positions, scored, dead)
    assert missing and set(missing) <= set(lost), missing
