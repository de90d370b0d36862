"""Fixtures for every test package: the session's stack and models (``tests/fixtures``)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = ["tests.fixtures.stack", "tests.fixtures.models", "tests.fixtures.brokers"]
