"""PSI and KS on cases with known answers (broker-free)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitoring.stats import EPSILON, bin_counts, ks_statistic, parse_edges, psi


def test_psi_of_identical_distributions_is_zero_whatever_the_sample_sizes() -> None:
    assert psi([10, 20, 30, 40], [1, 2, 3, 4]) == pytest.approx(0.0, abs=1e-12)


def test_psi_matches_the_textbook_formula() -> None:
    expected = [25, 25, 25, 25]
    actual = [10, 20, 30, 40]
    by_hand = sum((a - 0.25) * math.log(a / 0.25) for a in (0.1, 0.2, 0.3, 0.4))
    assert psi(expected, actual) == pytest.approx(by_hand, rel=1e-12)
    assert psi(expected, actual) == pytest.approx(0.228217, abs=1e-6)
    assert psi(expected, actual) == pytest.approx(psi(actual, expected))  # PSI is symmetric


def test_psi_of_a_one_sigma_mean_shift_is_near_the_continuous_value() -> None:
    # For N(0,1) vs N(1,1) the symmetric KL divergence (PSI's continuous limit) is exactly 1.
    rng = np.random.default_rng(7)
    reference, live = rng.normal(0, 1, 200_000), rng.normal(1, 1, 200_000)
    edges = np.quantile(reference, np.linspace(0, 1, 21))
    edges[0], edges[-1] = -np.inf, np.inf
    value = psi(bin_counts(reference, edges), bin_counts(live, edges))
    assert 0.85 < value < 1.0  # binning loses a little information, never adds it


def test_an_empty_bin_is_floored_not_infinite() -> None:
    value = psi([50, 50], [100, 0])
    assert math.isfinite(value)
    assert value == pytest.approx((1 - 0.5) * math.log(1 / 0.5) + (EPSILON - 0.5) * math.log(EPSILON / 0.5))


def test_ks_is_the_largest_cdf_gap() -> None:
    assert ks_statistic([1, 1, 1, 1], [1, 1, 1, 1]) == 0.0
    assert ks_statistic([1, 1, 1, 1], [0, 0, 0, 4]) == pytest.approx(0.75)
    assert ks_statistic([5, 0], [0, 5]) == pytest.approx(1.0)


def test_binned_ks_equals_scipy_when_values_sit_on_bin_centres() -> None:
    from scipy import stats  # installed with scikit-learn, a dependency
    rng = np.random.default_rng(3)
    centres = np.arange(10) + 0.5
    a = rng.choice(centres, 3000, p=np.full(10, 0.1))
    b = rng.choice(centres, 2000, p=np.linspace(1, 2, 10) / np.linspace(1, 2, 10).sum())
    edges = np.arange(11.0)
    assert ks_statistic(bin_counts(a, edges), bin_counts(b, edges)) == pytest.approx(
        stats.ks_2samp(a, b).statistic, abs=1e-12
    )


def test_bins_follow_the_exporters_edges_and_keep_outliers() -> None:
    edges = parse_edges(["-inf", 0.0, 1.0, "inf"])
    assert bin_counts(np.array([-5.0, 0.0, 0.5, 1.0, 99.0, np.nan]), edges).tolist() == [1, 2, 2]
    closed = parse_edges([0.0, 0.5, 1.0])
    assert bin_counts(np.array([-0.1, 0.0, 0.5, 1.0, 1.2]), closed).tolist() == [2, 3]


@pytest.mark.parametrize(("expected", "actual"), [([1, 2], [1, 2, 3]), ([0, 0], [1, 1]), ([1, -1], [1, 1])])
def test_bad_histograms_are_rejected_with_a_reason(expected: list[int], actual: list[int]) -> None:
    with pytest.raises(ValueError, match=r"bins|observations|non-negative"):
        psi(expected, actual)


def test_edges_must_increase() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        parse_edges([0.0, 0.0, 1.0])
