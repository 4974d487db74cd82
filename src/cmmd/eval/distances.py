"""Distances between feature distributions: Frechet distance (FVD, FAD) and polynomial-kernel MMD (KVD).

* Frechet distance of two Gaussians (Dowson & Landau 1982; the FID formula of Heusel et al.
  2017, used by FVD, Unterthiner et al. 2018, and FAD, Kilgour et al. 2019):
  ``d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``.
* Squared MMD with the polynomial kernel ``k(x, y) = (gamma x.y + coef0)^degree``, ``gamma = 1/D``
  by default (KID, Binkowski et al. 2018; KVD on I3D features), unbiased estimator (Gretton et
  al. 2012, Eq. 3 generalised to unequal sizes):
  ``sum_{i!=j} k(x_i, x_j) / (m (m-1)) + sum_{i!=j} k(y_i, y_j) / (n (n-1)) - 2 sum_{i,j} k(x_i, y_j) / (m n)``.
  Unbiased means it can be slightly negative when the two sets come from one distribution; for
  one set against itself it is ``(2/m) (mean_{i!=j} k(x_i, x_j) - mean_i k(x_i, x_i))``, i.e.
  O(1/m) of the kernel scale, not 0.

Inputs are features ``(N, D)`` (any float dtype, computed in float64). Sets too small for a
covariance or an unbiased estimate (fewer than 2 rows) and non-finite features raise
:class:`cmmd.errors.CmmdError` naming the problem.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

from cmmd.errors import CmmdError

# Imaginary parts of sqrtm(S1 S2) up to this fraction of its largest real entry are rounding
# (the exact square root of a product of PSD matrices has real eigenvalues).
IMAG_TOLERANCE = 1e-3


def _features(x: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    """Validate features ``(N, D)`` with ``N >= min_rows``; returns float64."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise CmmdError(f"{name}: expected features (N, D), got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise CmmdError(f"{name}: needs at least {min_rows} feature vectors, got {a.shape[0]}")
    if not np.all(np.isfinite(a)):
        raise CmmdError(f"{name}: features contain NaN or inf")
    return a


def feature_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of features ``x (N, D)``, ``N >= 2``."""
    a = _features(x, "feature_stats")
    return a.mean(axis=0), np.atleast_2d(np.cov(a, rowvar=False))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Squared Frechet distance between ``N(mu1 (D,), sigma1 (D, D))`` and ``N(mu2, sigma2)``.

    ``(S1 S2)^(1/2)`` is ``scipy.linalg.sqrtm``; when it is not finite (a nearly singular product,
    e.g. fewer samples than dimensions) ``eps * I`` is added to both covariances and it is
    recomputed, and a small imaginary part (up to ``IMAG_TOLERANCE`` of the largest real entry)
    is rounding and dropped; a larger one raises. Rounding can make the result slightly negative
    (about 1e-12 of the traces) for identical inputs.
    """
    m1, m2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64)), np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise CmmdError(f"frechet_distance: shapes do not match: mu {m1.shape} / {m2.shape}, "
                        f"sigma {s1.shape} / {s2.shape}")
    if not all(np.all(np.isfinite(v)) for v in (m1, m2, s1, s2)):
        raise CmmdError("frechet_distance: means or covariances contain NaN or inf")
    with warnings.catch_warnings():
        # "Matrix is singular": expected for N <= D; non-finite results are handled below.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.all(np.isfinite(covmean)):
            offset = eps * np.eye(d)
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        scale = max(float(np.abs(covmean.real).max()), 1e-30)
        if float(np.abs(covmean.imag).max()) > IMAG_TOLERANCE * scale:
            raise CmmdError("frechet_distance: sqrtm(S1 S2) has a large imaginary part; the covariances are not "
                            "positive semi-definite (or far too few samples for their dimension)")
        covmean = covmean.real
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def frechet_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """Squared Frechet distance between Gaussians fitted to features ``a (N, D)`` and ``b (M, D)``."""
    fa, fb = _features(a, "frechet_from_features (first set)"), _features(b, "frechet_from_features (second set)")
    if fa.shape[1] != fb.shape[1]:
        raise CmmdError(f"frechet_from_features: feature sizes differ ({fa.shape[1]} vs {fb.shape[1]})")
    return frechet_distance(*feature_stats(fa), *feature_stats(fb))


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    """``(gamma x_i . y_j + coef0)^degree`` for ``x (N, D)``, ``y (M, D)``: ``(N, M)``; gamma 1/D by default."""
    g = 1.0 / x.shape[1] if gamma is None else gamma
    return (g * (x @ y.T) + coef0) ** degree


def polynomial_mmd(a: np.ndarray, b: np.ndarray, degree: int = 3, gamma: float | None = None,
                   coef0: float = 1.0) -> float:
    """Unbiased squared MMD between features ``a (N, D)`` and ``b (M, D)`` under the polynomial
    kernel (module docstring); KID/KVD with the defaults ``(x.y / D + 1)^3``."""
    x, y = _features(a, "polynomial_mmd (first set)"), _features(b, "polynomial_mmd (second set)")
    if x.shape[1] != y.shape[1]:
        raise CmmdError(f"polynomial_mmd: feature sizes differ ({x.shape[1]} vs {y.shape[1]})")
    if degree < 1:
        raise CmmdError(f"polynomial_mmd: degree must be >= 1, got {degree}")
    m, n = x.shape[0], y.shape[0]
    k_xx = polynomial_kernel(x, x, degree, gamma, coef0)
    k_yy = polynomial_kernel(y, y, degree, gamma, coef0)
    k_xy = polynomial_kernel(x, y, degree, gamma, coef0)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())
