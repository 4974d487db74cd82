"""Frechet distance and polynomial-kernel MMD against closed forms (cmmd.eval.distances)."""

from __future__ import annotations

import numpy as np
import pytest

from cmmd.errors import CmmdError
from cmmd.eval.distances import (
    feature_stats,
    frechet_distance,
    frechet_from_features,
    polynomial_kernel,
    polynomial_mmd,
)


def random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def test_frechet_distance_of_diagonal_gaussians() -> None:
    """Commuting covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2."""
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_identity_against_rotated_full_covariance() -> None:
    """S1 = I, S2 = Q diag(l) Q^T (not diagonal): d^2 = |dmu|^2 + sum (1 - sqrt(l))^2."""
    rng = np.random.default_rng(1)
    q = random_rotation(rng, 5)
    lam = rng.uniform(0.2, 4.0, 5)
    s2 = q @ np.diag(lam) @ q.T
    mu = rng.standard_normal(5)
    expected = mu @ mu + np.sum((1.0 - np.sqrt(lam)) ** 2)
    assert frechet_distance(np.zeros(5), np.eye(5), mu, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_is_symmetric_and_one_dimensional_form() -> None:
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == pytest.approx(
        9.0 + 1.0)
    rng = np.random.default_rng(2)
    s1 = np.cov(rng.standard_normal((50, 4)), rowvar=False)
    s2 = np.cov(rng.standard_normal((50, 4)) @ rng.standard_normal((4, 4)), rowvar=False)
    m1, m2 = rng.standard_normal(4), rng.standard_normal(4)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(frechet_distance(m2, s2, m1, s1), rel=1e-8)


def test_frechet_from_features_identical_sets_is_zero() -> None:
    x = np.random.default_rng(3).standard_normal((200, 16)) * 3.0
    assert abs(frechet_from_features(x, x)) < 1e-8 * np.trace(np.cov(x, rowvar=False))


def exact_moment_sample(rng: np.random.Generator, n: int, mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``n`` points whose sample mean and unbiased covariance are exactly ``mu`` and ``cov``."""
    z = rng.standard_normal((n, mu.size))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return mu + z @ np.linalg.cholesky(cov).T


def test_frechet_from_features_of_samples_with_known_moments() -> None:
    """Features whose sample moments equal two given Gaussians give their closed-form distance."""
    rng = np.random.default_rng(4)
    q = random_rotation(rng, 3)
    s2 = q @ np.diag([0.5, 1.0, 2.0]) @ q.T
    a = exact_moment_sample(rng, 300, np.zeros(3), np.eye(3))
    b = exact_moment_sample(rng, 500, np.array([1.0, 0.0, -1.0]), s2)
    expected = 2.0 + np.sum((1.0 - np.sqrt([0.5, 1.0, 2.0])) ** 2)
    assert frechet_from_features(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_handles_fewer_samples_than_dimensions() -> None:
    """Rank-deficient covariances (N < D) still give a finite distance; identical sets ~0."""
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((10, 64)), rng.standard_normal((10, 64)) + 0.5
    d = frechet_from_features(a, b)
    assert np.isfinite(d) and d > 0
    assert abs(frechet_from_features(a, a)) < 1e-6 * np.trace(np.cov(a, rowvar=False))


@pytest.mark.parametrize(
    "a, b, match",
    [
        (np.zeros((1, 3)), np.zeros((5, 3)), "at least 2"),
        (np.zeros((5, 3)), np.zeros((5, 4)), "differ"),
        (np.full((5, 3), np.nan), np.zeros((5, 3)), "NaN"),
        (np.zeros(5), np.zeros((5, 3)), r"\(N, D\)"),
    ],
)
def test_frechet_from_features_rejects_bad_input(a: np.ndarray, b: np.ndarray, match: str) -> None:
    with pytest.raises(CmmdError, match=match):
        frechet_from_features(a, b)


def test_frechet_distance_rejects_mismatched_statistics() -> None:
    with pytest.raises(CmmdError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_feature_stats_is_mean_and_unbiased_covariance() -> None:
    x = np.random.default_rng(6).standard_normal((30, 4))
    mu, cov = feature_stats(x)
    np.testing.assert_allclose(mu, x.mean(axis=0))
    np.testing.assert_allclose(cov, (x - mu).T @ (x - mu) / 29)


def test_linear_kernel_mmd_closed_form() -> None:
    """Linear kernel: unbiased MMD^2 = |mean x - mean y|^2 - tr(Cx)/m - tr(Cy)/n."""
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((25, 5)), rng.standard_normal((40, 5)) + 0.3
    expected = (np.sum((x.mean(0) - y.mean(0)) ** 2) - np.trace(np.cov(x, rowvar=False)) / 25
                - np.trace(np.cov(y, rowvar=False)) / 40)
    assert polynomial_mmd(x, y, degree=1, gamma=1.0, coef0=0.0) == pytest.approx(expected, rel=1e-10)


def test_polynomial_mmd_matches_the_definition() -> None:
    """KID's kernel (x.y / D + 1)^3 with the unbiased estimator, written out with loops."""
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((4, 3))

    def k(u: np.ndarray, v: np.ndarray) -> float:
        return (u @ v / 3 + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(4)) / 24
    assert polynomial_mmd(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    np.testing.assert_allclose(polynomial_kernel(x, y)[1, 2], k(x[1], y[2]))


def test_polynomial_mmd_is_near_zero_for_one_distribution_and_positive_for_a_shift() -> None:
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    same = polynomial_mmd(x, y)
    shifted = polynomial_mmd(x, y + 0.5)
    assert abs(same) < 0.01 * shifted
    assert shifted > 0


def test_polynomial_mmd_of_a_set_with_itself() -> None:
    """X against X is (2/m)(mean off-diagonal k - mean diagonal k): O(1/m), not exactly 0."""
    x = np.random.default_rng(10).standard_normal((50, 4))
    k = polynomial_kernel(x, x)
    off = (k.sum() - np.trace(k)) / (50 * 49)
    assert polynomial_mmd(x, x) == pytest.approx(2 / 50 * (off - np.trace(k) / 50), rel=1e-10)


def test_polynomial_mmd_rejects_bad_input() -> None:
    with pytest.raises(CmmdError, match="at least 2"):
        polynomial_mmd(np.zeros((1, 3)), np.zeros((3, 3)))
    with pytest.raises(CmmdError, match="degree"):
        polynomial_mmd(np.zeros((3, 3)), np.zeros((3, 3)), degree=0)


@pytest.mark.parametrize("n, d", [(500, 20), (40, 20), (10, 30)])
def test_eigh_route_equals_sqrtm(n: int, d: int) -> None:
    """Both ways of taking Tr((S1 S2)^(1/2)) agree, also for rank-deficient covariances."""
    rng = np.random.default_rng(n + d)
    a = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    b = rng.standard_normal((n, d)) + 0.3
    reference = frechet_from_features(a, b, method="sqrtm")
    assert frechet_from_features(a, b, method="eigh") == pytest.approx(reference, rel=1e-6 if n < d else 1e-9)
    assert abs(frechet_from_features(a, a, method="eigh")) < 1e-8 * np.trace(np.cov(a, rowvar=False))
    with pytest.raises(CmmdError, match="method"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")  # type: ignore[arg-type]


def test_paired_polynomial_mmd_is_zero_for_identical_sets_and_matches_gretton() -> None:
    rng = np.random.default_rng(11)
    x, y = rng.standard_normal((7, 3)), rng.standard_normal((7, 3)) + 0.4
    assert polynomial_mmd(x, x, paired=True) == pytest.approx(0.0, abs=1e-12)
    k = polynomial_kernel
    h = sum(k(x[i:i + 1], x[j:j + 1])[0, 0] + k(y[i:i + 1], y[j:j + 1])[0, 0] - k(x[i:i + 1], y[j:j + 1])[0, 0]
            - k(x[j:j + 1], y[i:i + 1])[0, 0] for i in range(7) for j in range(7) if i != j)
    assert polynomial_mmd(x, y, paired=True) == pytest.approx(h / 42, rel=1e-12)
    with pytest.raises(CmmdError, match="equal sizes"):
        polynomial_mmd(x, y[:5], paired=True)
