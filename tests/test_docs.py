"""Figures and names the documentation states, checked against the code and the tests they describe."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from features import FEATURE_LIST, RedisFeatureStore
from features.online import entity_keys, state_tag
from tests import docs_figures

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_reliability_states_the_fault_tests_own_figures() -> None:
    stated = docs_figures.block(docs_figures.RELIABILITY.read_text())
    assert stated, "docs/reliability.md lost its generated block of fault-test figures"
    assert stated == docs_figures.render(), (
        "docs/reliability.md states other figures than the fault tests use: "
        "run `.venv/bin/python -m tests.docs_figures --write` and review the prose around it"
    )


def test_reliability_lists_every_chaos_test_module() -> None:
    text = docs_figures.RELIABILITY.read_text()
    missing = [module for module in docs_figures.chaos_tests() if f"`{module}" not in text]  # also `…py::test`
    assert not missing, f"fault tests docs/reliability.md does not describe: {missing}"


def test_features_doc_names_the_keys_the_store_writes() -> None:
    prefix = RedisFeatureStore(aioredis.Redis(), key_prefix="fs").key_prefix  # no connection is made
    tag = state_tag(FEATURE_LIST)
    assert prefix == f"fs:{tag}"
    keys = [*entity_keys(prefix, "card", "<card_ref>")[:2], *entity_keys(prefix, "terminal", "<terminal>")]
    text = (DOCS / "features.md").read_text()
    missing = [k for k in (key.replace(tag, "<tag>") for key in keys) if f"`{k}`" not in text]
    assert not missing, f"docs/features.md does not give the store's key layout: {missing}"
