"""Tests for evaluation.stats: paired tests and bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from core.errors import ShopsearchError
from evaluation.stats import PairedTest, bootstrap_ci, paired_test


def _scores(values: np.ndarray, prefix: str = "q") -> dict[str, float]:
    return {f"{prefix}{i}": float(v) for i, v in enumerate(values)}


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


@pytest.mark.parametrize("method", ["randomization", "ttest"])
def test_identical_systems_have_p_one(method: str) -> None:
    a = _scores(np.random.default_rng(1).random(30))
    result = paired_test(a, dict(a), method=method)
    assert result.p_value == pytest.approx(1.0)
    assert result.delta == 0.0 and result.n == 30 and result.method == method


@pytest.mark.parametrize("method", ["randomization", "ttest"])
def test_clearly_better_everywhere_is_significant(method: str) -> None:
    rng = np.random.default_rng(2)
    base = rng.uniform(0.2, 0.6, size=30)
    a = _scores(base)
    b = _scores(base + rng.uniform(0.1, 0.3, size=30))
    result = paired_test(a, b, method=method)
    assert result.p_value < 0.001
    assert result.delta > 0.1
    assert result.relative_delta == pytest.approx(result.delta / result.mean_a)


def test_exact_randomization_matches_scipy() -> None:
    # 10 queries: 2**10 = 1024 <= n_resamples, so both sides enumerate every sign pattern.
    rng = np.random.default_rng(3)
    xa = rng.random(10)
    xb = xa + rng.normal(0.1, 0.15, size=10)
    ours = paired_test(_scores(xa), _scores(xb), n_resamples=10000)
    ref = scipy_stats.permutation_test(
        (xb, xa), _mean_diff, permutation_type="samples", vectorized=True, n_resamples=10000
    )
    assert 0.0 < ours.p_value < 1.0
    assert ours.p_value == pytest.approx(ref.pvalue, abs=1e-9)


def test_sampled_randomization_close_to_scipy() -> None:
    # 40 queries: both sides sample random sign patterns; p-values agree within noise.
    rng = np.random.default_rng(4)
    xa = rng.random(40)
    xb = xa + rng.normal(0.03, 0.12, size=40)
    ours = paired_test(_scores(xa), _scores(xb), n_resamples=20000, seed=5)
    ref = scipy_stats.permutation_test(
        (xb, xa),
        _mean_diff,
        permutation_type="samples",
        vectorized=True,
        n_resamples=20000,
        rng=np.random.default_rng(6),
    )
    assert 0.01 < ref.pvalue < 0.99
    assert ours.p_value == pytest.approx(ref.pvalue, abs=0.015)


def test_ttest_matches_scipy_and_uses_intersection() -> None:
    rng = np.random.default_rng(7)
    xa, xb = rng.random(20), rng.random(20)
    a = _scores(xa) | {"only_a": 1.0}
    b = _scores(xb) | {"only_b": 0.0}
    result = paired_test(a, b, method="ttest")
    assert result.n == 20
    assert result.p_value == pytest.approx(scipy_stats.ttest_rel(xb, xa).pvalue)
    assert result.mean_a == pytest.approx(xa.mean())
    assert isinstance(result, PairedTest)


def test_paired_test_errors_and_determinism() -> None:
    with pytest.raises(ShopsearchError, match="share no query"):
        paired_test({"q1": 1.0}, {"q2": 1.0})
    with pytest.raises(ShopsearchError, match="unknown method"):
        paired_test({"q1": 1.0}, {"q1": 1.0}, method="wilcoxon")
    rng = np.random.default_rng(8)
    a, b = _scores(rng.random(50)), _scores(rng.random(50))
    assert paired_test(a, b, seed=1) == paired_test(a, b, seed=1)
    assert math.isnan(paired_test({"q": 0.0}, {"q": 1.0}).relative_delta)


def test_bootstrap_ci() -> None:
    rng = np.random.default_rng(9)
    values = rng.normal(0.5, 0.1, size=400)
    ci = bootstrap_ci(values)
    assert ci.low < ci.mean < ci.high
    # The normal-theory 95% interval half-width is 1.96 * 0.1 / sqrt(400) = 0.0098.
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * values.std() / 20, rel=0.1)
    assert bootstrap_ci(_scores(values)) == ci
    assert bootstrap_ci([0.3, 0.3, 0.3]).low == 0.3
    with pytest.raises(ShopsearchError, match="at least one value"):
        bootstrap_ci([])
