"""Statistics for reporting metrics: bootstrap confidence intervals, paired tests, corrections.

Used by every evaluation report (METHOD.md section 6): per-clip scores are summarised with a
percentile bootstrap CI, two systems rated on the same items (MOS, per-clip sync scores) are
compared with the Wilcoxon signed-rank test, and families of comparisons are corrected with
Holm (default) or Bonferroni.

NaN policy: per-clip metrics are NaN where they are undefined (e.g. class accuracy of a clip
with no matched events). ``bootstrap_ci`` drops NaNs and reports how many it dropped;
``paired_wilcoxon`` drops pairs where either side is NaN and reports how many.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from cmmd.errors import CmmdError

# Bootstrap resamples are drawn in chunks of at most this many values, so memory stays bounded
# (16 MB of float64) whatever ``n_boot * len(values)`` is.
_BOOT_CHUNK_VALUES = 2_000_000


@dataclass(frozen=True)
class BootstrapCI:
    """A point estimate with a percentile-bootstrap interval; unpacks as ``point, lo, hi``.

    ``n`` is the number of finite values used, ``n_dropped`` the NaNs removed. All three
    numbers are NaN when ``n == 0``.
    """

    point: float
    lo: float
    hi: float
    n: int
    n_dropped: int

    def __iter__(self) -> Iterator[float]:
        return iter((self.point, self.lo, self.hi))


def _finite_values(values: Sequence[float] | np.ndarray) -> tuple[np.ndarray, int]:
    """Flatten ``values`` to float64 and drop NaNs; returns ``(kept (n,), n_dropped)``."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if np.isinf(arr).any():
        raise CmmdError("bootstrap_ci: values contain +-inf; a metric overflowed upstream")
    keep = ~np.isnan(arr)
    return arr[keep], int((~keep).sum())


def _statistic_rows(statistic: Callable[..., object], samples: np.ndarray) -> np.ndarray:
    """Apply ``statistic`` to each row of ``samples (B, n)``; uses ``axis=-1`` when supported."""
    try:
        out = np.asarray(statistic(samples, axis=-1), dtype=np.float64)
    except TypeError:
        out = np.array([float(statistic(row)) for row in samples])  # type: ignore[arg-type]
    if out.shape != (samples.shape[0],):
        raise CmmdError(
            f"bootstrap_ci: statistic must reduce each resample to one number, got shape {out.shape}"
        )
    return out


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    statistic: Callable[..., object] = np.mean,
) -> BootstrapCI:
    """Percentile bootstrap CI of ``statistic`` over ``values`` (any shape, flattened).

    Resamples ``values`` with replacement ``n_boot`` times (vectorised: one ``(chunk, n)`` index
    array per chunk), and returns the ``statistic`` of the original sample with the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled statistics.
    ``statistic`` is called as ``statistic(x, axis=-1)`` on a 2-D batch when it accepts ``axis``
    (``np.mean``, ``np.median``), else row by row. NaNs are dropped and counted; with no finite
    value left the result is all NaN with ``n == 0`` (an empty row in a report, not a crash).
    """
    if n_boot < 1:
        raise CmmdError(f"bootstrap_ci: n_boot must be >= 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise CmmdError(f"bootstrap_ci: confidence must lie in (0, 1), got {confidence}")
    x, n_dropped = _finite_values(values)
    n = x.size
    if n == 0:
        nan = float("nan")
        return BootstrapCI(nan, nan, nan, 0, n_dropped)
    point = float(_statistic_rows(statistic, x[None, :])[0])
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _BOOT_CHUNK_VALUES // n)
    boot = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows_per_chunk):
        stop = min(n_boot, start + rows_per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        boot[start:stop] = _statistic_rows(statistic, x[idx])
    alpha = 1.0 - confidence
    lo, hi = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapCI(point, float(lo), float(hi), n, n_dropped)


def summarise(
    per_item: Sequence[Mapping[str, float]],
    keys: Sequence[str] | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, BootstrapCI]:
    """Mean and bootstrap CI of each numeric metric over a list of per-item score dicts.

    ``keys`` defaults to the numeric keys of the first item; an item missing a key counts as
    NaN for it (dropped and counted in ``n_dropped``).
    """
    if not per_item:
        raise CmmdError("summarise: no per-item scores to summarise")
    if keys is None:
        keys = [k for k, v in per_item[0].items() if isinstance(v, (int, float, np.number))]
    return {
        k: bootstrap_ci(
            [float(item.get(k, float("nan"))) for item in per_item],
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
        )
        for k in keys
    }


def paired_wilcoxon(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    zero_method: str = "pratt",
    alternative: str = "two-sided",
    min_pairs: int = 6,
) -> dict[str, float]:
    """Wilcoxon signed-rank test of ``a`` against ``b``, paired item by item (1-D, same length).

    Returns ``statistic``, ``p_value``, ``n`` (pairs used), ``n_dropped`` (pairs with a NaN on
    either side), ``n_zero`` (pairs with zero difference) and ``median_diff`` = median of
    ``a - b``.

    Zero differences are common with MOS ratings (integers 1-5), so ``zero_method="pratt"``
    by default: zeros take part in the ranking (so they dilute the evidence, as they should) and
    are then dropped from the rank sum; scipy's default ``"wilcox"`` discards them before
    ranking, which overstates significance when many items tie. If every difference is zero
    there is no evidence of a difference: ``statistic`` 0 and ``p_value`` 1.0 (scipy would give
    NaN). ``min_pairs`` defaults to 6 because with 5 or fewer pairs no two-sided p-value can fall
    below 0.05 (the smallest exact p for n = 5 is 0.0625), so the test could never succeed.
    """
    xa = np.asarray(a, dtype=np.float64)
    xb = np.asarray(b, dtype=np.float64)
    if xa.ndim != 1 or xb.ndim != 1:
        raise CmmdError(f"paired_wilcoxon: expected 1-D score lists, got shapes {xa.shape} and {xb.shape}")
    if xa.shape != xb.shape:
        raise CmmdError(
            f"paired_wilcoxon: samples are not paired ({xa.size} vs {xb.size} items); "
            "score both systems on the same items in the same order"
        )
    keep = ~(np.isnan(xa) | np.isnan(xb))
    d = xa[keep] - xb[keep]
    n = int(d.size)
    if n < min_pairs:
        raise CmmdError(
            f"paired_wilcoxon: {n} complete pairs, need at least {min_pairs} for a meaningful test"
        )
    n_zero = int((d == 0).sum())
    base = {"n": float(n), "n_dropped": float((~keep).sum()), "n_zero": float(n_zero),
            "median_diff": float(np.median(d))}
    if n_zero == n:
        return {"statistic": 0.0, "p_value": 1.0, **base}
    res = sps.wilcoxon(d, zero_method=zero_method, alternative=alternative)
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue), **base}


def _p_array(p_values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """Validate p-values: 1-D, finite, in [0, 1]."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise CmmdError(f"{name}: expected a 1-D list of p-values, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise CmmdError(f"{name}: p-values must be finite and in [0, 1], got {p.tolist()}")
    return p


def bonferroni(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Bonferroni-adjusted p-values ``min(1, m * p)`` for ``m`` comparisons, shape ``(m,)``."""
    p = _p_array(p_values, "bonferroni")
    return np.minimum(1.0, p * p.size)


def holm_correction(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values, shape ``(m,)``, in the input order.

    Sorted ascending, the ``i``-th (0-based) p-value is multiplied by ``m - i``; a running
    maximum keeps the adjusted values monotone, then they are clipped to 1. Uniformly more
    powerful than Bonferroni with the same family-wise error guarantee.
    """
    p = _p_array(p_values, "holm_correction")
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m - np.arange(m))
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    adjusted = np.empty_like(p)
    adjusted[order] = adjusted_sorted
    return adjusted
