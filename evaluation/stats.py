"""Paired significance tests and bootstrap confidence intervals over per-query scores."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from core.errors import ShopsearchError

#: Random sign/index matrices are drawn in chunks of at most this many entries.
_CHUNK_ENTRIES = 4_000_000


@dataclass(frozen=True)
class PairedTest:
    """Result of comparing system b against system a on the same queries.

    Attributes:
        mean_a: Mean of a over the shared queries.
        mean_b: Mean of b over the shared queries.
        delta: ``mean_b - mean_a``.
        relative_delta: ``delta / mean_a`` (NaN when mean_a is 0).
        p_value: Two-sided p-value of "no difference".
        n: Number of shared queries.
        method: ``"randomization"`` (exact when 2**n <= n_resamples) or ``"ttest"``.
    """

    mean_a: float
    mean_b: float
    delta: float
    relative_delta: float
    p_value: float
    n: int
    method: str


@dataclass(frozen=True)
class BootstrapCI:
    """Percentile bootstrap confidence interval of a mean."""

    mean: float
    low: float
    high: float
    alpha: float
    n: int


def _paired_arrays(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[np.ndarray, ...]:
    qids = sorted(set(a) & set(b))
    if not qids:
        raise ShopsearchError("the two systems share no query ids: nothing to compare")
    xa = np.array([a[q] for q in qids], dtype=np.float64)
    xb = np.array([b[q] for q in qids], dtype=np.float64)
    return xa, xb


def _randomization_p(diff: np.ndarray, n_resamples: int, seed: int) -> float:
    """Two-sided paired sign-flip test of mean(diff) == 0.

    Enumerates all 2**n sign patterns when that is no more than ``n_resamples`` (exact p);
    otherwise draws ``n_resamples`` random patterns and returns ``(hits + 1) / (n_resamples + 1)``.
    """
    n = diff.size
    observed = abs(diff.mean())
    # Relative slack so floating-point noise in equal statistics still counts as a hit.
    tol = 1e-12 * max(1.0, float(np.abs(diff).max(initial=0.0)))
    if n <= 30 and 2**n <= n_resamples:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        means = signs @ diff / n
        return float(np.mean(np.abs(means) >= observed - tol))
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ENTRIES // n)
    hits = 0
    done = 0
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        signs = rng.integers(0, 2, size=(size, n), dtype=np.int8) * 2 - 1
        means = signs @ diff / n
        hits += int(np.count_nonzero(np.abs(means) >= observed - tol))
        done += size
    return (hits + 1) / (n_resamples + 1)


def paired_test(
    a: Mapping[str, float],
    b: Mapping[str, float],
    method: str = "randomization",
    n_resamples: int = 10000,
    seed: int = 0,
) -> PairedTest:
    """Paired two-sided test of b against a over the query ids both have.

    Args:
        a: query_id -> score of the baseline.
        b: query_id -> score of the candidate.
        method: ``"randomization"`` (paired sign-flip permutation test of the mean
            difference) or ``"ttest"`` (``scipy.stats.ttest_rel``).
        n_resamples: Random sign patterns for the randomization test.
        seed: Seed of the randomization test.

    Raises:
        ShopsearchError: No shared query id, an unknown method, or ``n_resamples`` below 1.
    """
    if method not in ("randomization", "ttest"):
        raise ShopsearchError(f"unknown method {method!r}: use 'randomization' or 'ttest'")
    if n_resamples < 1:
        raise ShopsearchError(f"n_resamples must be >= 1, got {n_resamples}")
    xa, xb = _paired_arrays(a, b)
    diff = xb - xa
    if method == "randomization":
        p_value = _randomization_p(diff, n_resamples, seed)
    elif not np.any(diff):
        # ttest_rel is undefined (0/0) for identical systems; there is no evidence of a difference.
        p_value = 1.0
    else:
        p_value = float(scipy_stats.ttest_rel(xb, xa).pvalue)
    mean_a, mean_b = float(xa.mean()), float(xb.mean())
    delta = mean_b - mean_a
    return PairedTest(
        mean_a=mean_a,
        mean_b=mean_b,
        delta=delta,
        relative_delta=delta / mean_a if mean_a != 0 else math.nan,
        p_value=p_value,
        n=int(diff.size),
        method=method,
    )


def bootstrap_ci(
    values: Iterable[float] | Mapping[str, float],
    alpha: float = 0.05,
    n_resamples: int = 10000,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap ``1 - alpha`` confidence interval of the mean.

    Args:
        values: Per-query scores (a mapping's values are used).
        alpha: Two-sided error level, in (0, 1).
        n_resamples: Bootstrap resamples.
        seed: Seed of the resampling.

    Raises:
        ShopsearchError: No values, or alpha outside (0, 1).
    """
    if isinstance(values, Mapping):
        values = values.values()
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ShopsearchError("bootstrap_ci needs at least one value")
    if not 0.0 < alpha < 1.0:
        raise ShopsearchError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    n = x.size
    chunk = max(1, _CHUNK_ENTRIES // n)
    means = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        means[start : start + size] = x[rng.integers(0, n, size=(size, n))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(mean=float(x.mean()), low=float(low), high=float(high), alpha=alpha, n=n)
