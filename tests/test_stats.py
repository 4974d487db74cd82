"""Tests for cmmd.eval.stats: bootstrap CIs, paired Wilcoxon test, multiple-comparison corrections."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmmd.errors import CmmdError
from cmmd.eval.stats import bonferroni, bootstrap_ci, holm_correction, paired_wilcoxon, summarise


def test_bootstrap_ci_covers_true_mean_with_expected_width() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(loc=2.0, scale=1.0, size=400)
    point, lo, hi = bootstrap_ci(x, n_boot=2000, seed=0)
    assert point == pytest.approx(x.mean())
    assert lo < 2.0 < hi
    # Normal-theory 95 % width: 2 * 1.96 * sigma / sqrt(n) = 0.196.
    assert hi - lo == pytest.approx(2 * 1.96 / math.sqrt(400), rel=0.15)


def test_bootstrap_ci_is_seeded_and_supports_median() -> None:
    x = np.random.default_rng(0).normal(size=40)
    first, again, other = bootstrap_ci(x, seed=3), bootstrap_ci(x, seed=3), bootstrap_ci(x, seed=4)
    assert (first.lo, first.hi) == (again.lo, again.hi)  # the seed fixes the resamples...
    assert (first.lo, first.hi) != (other.lo, other.hi)  # ...and a different seed draws others
    point, lo, hi = bootstrap_ci(np.arange(50, dtype=float), statistic=np.median, n_boot=500)
    assert point == 24.5 and lo < point < hi


def test_bootstrap_ci_of_the_mean_matches_the_normal_interval() -> None:
    """For n = 400 normal values the percentile interval is mean +- 1.96 sd / sqrt(n) to ~5 %."""
    x = np.random.default_rng(1).normal(3.0, 2.0, size=400)
    point, lo, hi = bootstrap_ci(x, n_boot=4000)
    half = 1.96 * x.std() / np.sqrt(x.size)
    assert point == pytest.approx(x.mean())
    assert lo == pytest.approx(x.mean() - half, abs=0.05 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.05 * half)


def test_bootstrap_ci_accepts_statistic_without_axis() -> None:
    """A statistic without ``axis`` goes row by row and must give exactly the vectorised result."""
    x = np.random.default_rng(2).normal(size=30)

    def mean_without_axis(v: np.ndarray) -> float:
        return float(np.mean(v))

    assert tuple(bootstrap_ci(x, statistic=mean_without_axis, n_boot=300, seed=5)) == pytest.approx(
        tuple(bootstrap_ci(x, statistic=np.mean, n_boot=300, seed=5)), rel=1e-12)

    def spread(v: np.ndarray) -> float:
        return float(v.max() - v.min())

    point, lo, hi = bootstrap_ci(np.arange(10.0), statistic=spread, n_boot=200)
    assert point == 9.0 and hi == 9.0 and lo < 9.0  # resamples that miss an end have a smaller range


def test_bootstrap_ci_drops_and_counts_nans() -> None:
    ci = bootstrap_ci([1.0, float("nan"), 3.0, float("nan")], n_boot=100)
    assert ci.n == 2 and ci.n_dropped == 2 and ci.point == 2.0
    empty = bootstrap_ci([float("nan")])
    assert empty.n == 0 and math.isnan(empty.point) and math.isnan(empty.lo)
    assert bootstrap_ci([]).n == 0


def test_bootstrap_ci_rejects_bad_arguments() -> None:
    with pytest.raises(CmmdError):
        bootstrap_ci([1.0, 2.0], confidence=1.5)
    with pytest.raises(CmmdError):
        bootstrap_ci([1.0, float("inf")])
    with pytest.raises(CmmdError):
        bootstrap_ci([1.0, 2.0], n_boot=0)


def test_summarise_per_item_scores() -> None:
    items = [{"f1": 1.0, "acc": float("nan"), "name": "a"}, {"f1": 0.5, "acc": 1.0, "name": "b"}]
    out = summarise(items, n_boot=100)
    assert set(out) == {"f1", "acc"}
    assert out["f1"].point == 0.75 and out["acc"].n_dropped == 1
    with pytest.raises(CmmdError):
        summarise([])


def test_wilcoxon_detects_clear_paired_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=30)
    res = paired_wilcoxon(a + 0.8 + 0.1 * rng.normal(size=30), a)
    assert res["p_value"] < 0.05 and res["n"] == 30
    assert res["median_diff"] == pytest.approx(0.8, abs=0.1)


def test_wilcoxon_no_difference_for_same_distribution() -> None:
    rng = np.random.default_rng(0)
    res = paired_wilcoxon(rng.normal(size=30), rng.normal(size=30))
    assert res["p_value"] > 0.05


def test_wilcoxon_handles_zero_differences_and_ties() -> None:
    same = [3.0, 4.0, 2.0, 5.0, 3.0, 4.0, 1.0]
    res = paired_wilcoxon(same, same)
    assert res["p_value"] == 1.0 and res["n_zero"] == 7
    # MOS-style integer ratings with many ties still give a finite p-value.
    a = np.array([4, 4, 5, 3, 4, 5, 4, 4, 3, 5, 4, 4])
    b = np.array([3, 4, 4, 3, 3, 4, 4, 3, 3, 4, 3, 4])
    res = paired_wilcoxon(a, b)
    assert 0.0 < res["p_value"] < 0.05 and res["n_zero"] == 5


def test_wilcoxon_errors_and_nan_pairs() -> None:
    with pytest.raises(CmmdError, match="not paired"):
        paired_wilcoxon([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(CmmdError, match="at least"):
        paired_wilcoxon([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
    with pytest.raises(CmmdError):
        paired_wilcoxon(np.ones((3, 3)), np.ones((3, 3)))
    a = np.arange(10.0)
    b = a - 1.0
    b[0] = float("nan")
    assert paired_wilcoxon(a, b)["n_dropped"] == 1


def test_holm_and_bonferroni() -> None:
    p = [0.01, 0.04, 0.03, 0.5]
    np.testing.assert_allclose(bonferroni(p), [0.04, 0.16, 0.12, 1.0])
    # Sorted: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> running max 0.09, 0.5*1 -> 0.5.
    np.testing.assert_allclose(holm_correction(p), [0.04, 0.09, 0.09, 0.5])
    assert np.all(holm_correction(p) <= bonferroni(p))
    assert holm_correction([]).size == 0
    with pytest.raises(CmmdError):
        holm_correction([0.1, float("nan")])
    with pytest.raises(CmmdError):
        bonferroni([1.2])
