"""The chart rendered once per session: with its default values and with the production-like values."""

from __future__ import annotations

import pytest

from tests.fixtures.chart import PRODUCTION_VALUES, Rendered, render


@pytest.fixture(scope="session")
def default_chart() -> Rendered:
    return render()


@pytest.fixture(scope="session")
def production_chart() -> Rendered:
    return render([PRODUCTION_VALUES])


@pytest.fixture(scope="session", params=["default", "production"])
def chart(request: pytest.FixtureRequest) -> Rendered:
    """Each test that takes this runs on both renderings."""
    fixture: Rendered = request.getfixturevalue(f"{request.param}_chart")
    return fixture
