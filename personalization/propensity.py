"""Position bias: how likely a shopper is to look at each rank, estimated from clicks alone.

Clicks on shown results are biased by position: most go to the top whatever the relevance. The
examination hypothesis factors a click into *examined* and *relevant*::

    P(click | rank k, item x) = theta_k * gamma(x)

:func:`estimate_propensities` fits both by **regression-EM** (Wang, Golbandi, Bendersky,
Metzler and Najork, "Position Bias Estimation for Unbiased Learning to Rank in Personal
Search", WSDM 2018): the E-step computes, for each unclicked impression, the posterior of
"examined but not relevant" and "relevant but not examined"; the M-step sets ``theta_k`` to the
mean examination posterior at rank k and refits ``gamma`` as a logistic regression on the
items' features with the relevance posteriors as soft labels. ``theta`` is reported relative to
rank 1 (rank 1 is taken as always examined), which fixes the scale the factorization leaves
free.

The features given to ``gamma`` must describe the item for this query and shopper, never the
rank it was shown at, or ``gamma`` would absorb the bias it is meant to separate.

It lives in ``personalization`` (pure numpy) so that the service's analytics
(:mod:`analytics.report`) estimate the curve with the same code as ``train personal``
(:mod:`training.from_log`); ``training.propensity`` re-exports it. The clip of inverse weights
is the trainer's choice (``training.config.DEFAULT_CLIP``), passed in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import ShopsearchError


@dataclass(frozen=True)
class Propensities:
    """Examination probability per rank, relative to rank 1.

    Attributes:
        theta: ``theta[k - 1]`` for ranks 1..n (``theta[0] == 1``), float64.
        iterations: EM iterations run.
        converged: Whether the largest change fell below the tolerance.
        impressions: Impressions per rank used to estimate it.
    """

    theta: np.ndarray
    iterations: int
    converged: bool
    impressions: np.ndarray

    def of(self, ranks: np.ndarray, clip: float) -> np.ndarray:
        """The propensity of 1-based ranks, clipped below at ``clip`` (ranks past the last
        estimated one take the last value); ``clip``: the trainer's (``training.config``'s
        ``DEFAULT_CLIP`` by default)."""
        idx = np.clip(np.asarray(ranks, dtype=np.int64) - 1, 0, len(self.theta) - 1)
        return np.maximum(self.theta[idx], clip)

    def inverse_weights(self, ranks: np.ndarray, clip: float) -> np.ndarray:
        """Clipped inverse-propensity weights ``1 / max(theta_k, clip)``."""
        return 1.0 / self.of(ranks, clip)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def _fit_logistic(
    x: np.ndarray, target: np.ndarray, w: np.ndarray, steps: int, lr: float, l2: float
) -> np.ndarray:
    """Logistic regression on soft labels by gradient descent, warm-started from ``w``."""
    n = len(x)
    for _ in range(steps):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - target) / n + l2 * np.r_[w[:-1], 0.0]
        w = w - lr * grad
    return w


def estimate_propensities(
    ranks: np.ndarray,
    clicks: np.ndarray,
    features: np.ndarray,
    max_rank: int | None = None,
    iterations: int = 200,
    tol: float = 1e-4,
    l2: float = 1e-3,
) -> Propensities:
    """Examination probability per rank by regression-EM (Wang et al., WSDM 2018).

    Args:
        ranks: 1-based rank of each impression, shape ``(n,)``.
        clicks: 1 where the shown product got an interaction, else 0, shape ``(n,)``.
        features: Item features for ``gamma``, shape ``(n, f)`` (never the rank).
        max_rank: Estimate ranks 1..max_rank (default: the largest rank seen).
        iterations: Most EM iterations.
        tol: Stop when the mean log-likelihood per impression moves less than ``tol / 100``.
        l2: L2 penalty of the relevance regression.

    Returns:
        :class:`Propensities` with ``theta[0] == 1``.

    Raises:
        ShopsearchError: No click at all (position bias cannot be estimated).
        ValueError: Mismatched shapes or ranks below 1 (a bug of the caller).
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    clicks = np.asarray(clicks, dtype=np.float64)
    x = np.asarray(features, dtype=np.float64)
    if not (len(ranks) == len(clicks) == len(x)):
        raise ValueError(f"{len(ranks)} ranks, {len(clicks)} clicks, {len(x)} feature rows")
    if len(ranks) == 0 or clicks.sum() == 0:
        raise ShopsearchError("no click in the impressions: position bias cannot be estimated")
    if ranks.min() < 1:
        raise ValueError("ranks are 1-based")
    k = int(max_rank or ranks.max())
    keep = ranks <= k
    ranks, clicks, x = ranks[keep], clicks[keep], x[keep]
    fit = _em(ranks, clicks, _standardized(x), k, None, iterations, tol, l2)
    return fit.propensities


def _standardized(x: np.ndarray) -> np.ndarray:
    """Features standardised per column, with a constant column for the intercept."""
    mean, std = x.mean(0), x.std(0)
    return np.c_[(x - mean) / np.where(std > 1e-9, std, 1.0), np.ones(len(x))]


@dataclass(frozen=True)
class _Fit:
    propensities: Propensities
    w: np.ndarray  # the relevance regression's weights (standardised features + intercept)


def _em(
    ranks: np.ndarray,
    clicks: np.ndarray,
    x: np.ndarray,
    k: int,
    start: _Fit | None,
    iterations: int,
    tol: float,
    l2: float,
) -> _Fit:
    """Regression-EM on standardised features ``x`` (with intercept), from ``start`` (a fit
    of similar data: the bootstrap's warm start) or from the click-through rates."""
    counts = np.bincount(ranks - 1, minlength=k).astype(np.float64)
    if start is not None:
        theta, w = start.propensities.theta.copy(), start.w.copy()
    else:
        ctr = np.bincount(ranks - 1, weights=clicks, minlength=k) / np.maximum(counts, 1)
        theta = np.clip(ctr / max(ctr[0], 1e-9), 0.01, 1.0)  # start: click-through rate by rank
        w = np.zeros(x.shape[1])
        w[-1] = np.log(max(ctr[0], 1e-3) / max(1 - ctr[0], 1e-3))
    converged, done, last = False, 0, -np.inf
    for step in range(1, iterations + 1):
        done = step
        gamma = _sigmoid(x @ w)
        t = theta[ranks - 1]
        denom = np.maximum(1.0 - t * gamma, 1e-9)
        p_exam = np.where(clicks > 0, 1.0, t * (1.0 - gamma) / denom)
        p_rel = np.where(clicks > 0, 1.0, (1.0 - t) * gamma / denom)
        new = np.bincount(ranks - 1, weights=p_exam, minlength=k) / np.maximum(counts, 1)
        theta = np.clip(np.where(counts > 0, new, theta) / max(new[0], 1e-9), 1e-4, 1.0)
        w = _fit_logistic(x, p_rel, w, steps=25, lr=0.5, l2=l2)
        p_click = np.clip(theta[ranks - 1] * _sigmoid(x @ w), 1e-9, 1 - 1e-9)
        loglik = float(np.mean(clicks * np.log(p_click) + (1 - clicks) * np.log(1 - p_click)))
        if abs(loglik - last) < tol * 1e-2:
            converged = True
            break
        last = loglik
    return _Fit(
        Propensities(theta=theta, iterations=done, converged=converged, impressions=counts), w
    )


#: Resamples of :func:`bootstrap_propensities` by default (the CLI's ``--bootstrap``).
DEFAULT_RESAMPLES = 200
#: The curve is *uncertain* (a warning) when its 95% interval at any of ranks 2..
#: :data:`CHECKED_RANKS` is wider than :data:`MAX_WIDTH`: the top ranks carry most of the
#: inverse-propensity weight and most clicks, so a curve that is loose there corrects by guesswork
#: (a width of 0.25 lets rank 3's 1/3 read anywhere from about 0.2 to 0.45).
CHECKED_RANKS = 5
MAX_WIDTH = 0.25


@dataclass(frozen=True)
class PropensityInterval:
    """A percentile bootstrap interval of the examination curve, per rank.

    Attributes:
        low, high: ``alpha / 2`` and ``1 - alpha / 2`` quantiles of ``theta_k`` over the
            resamples, ranks 1..n (rank 1 is 1 by definition), float64.
        alpha: Two-sided error level (0.05: 95% intervals).
        resamples: Resamples that converged to a curve (a resample without a click is skipped).
        seed: Seed of the resampling.
        searches: Searches resampled (the unit: one shown list and its clicks).
        clicks: Clicks per rank in the data, int64 ``(n,)``.
    """

    low: np.ndarray
    high: np.ndarray
    alpha: float
    resamples: int
    seed: int
    searches: int
    clicks: np.ndarray

    @property
    def width(self) -> np.ndarray:
        """``high - low`` per rank."""
        return self.high - self.low

    def widest(self, ranks: int = CHECKED_RANKS) -> tuple[int, float]:
        """(1-based rank, width) of the widest interval among ranks 2..``ranks``."""
        w = self.width[1:ranks]
        if not len(w):
            return 1, 0.0
        i = int(np.argmax(w))
        return i + 2, float(w[i])

    def clicks_needed(self, max_width: float = MAX_WIDTH, ranks: int = CHECKED_RANKS) -> int:
        """About how many clicks in all would narrow every checked interval to ``max_width``:
        today's clicks times ``(widest / max_width) ** 2`` (an interval narrows as one over the
        square root of the data; a rough extrapolation, not a promise). Today's when narrow
        enough already."""
        total = int(self.clicks.sum())
        _, widest = self.widest(ranks)
        if widest <= max_width:
            return total
        return int(np.ceil(total * (widest / max_width) ** 2))

    def uncertain(self, max_width: float = MAX_WIDTH, ranks: int = CHECKED_RANKS) -> bool:
        """Whether any checked rank's interval is wider than ``max_width``."""
        return self.widest(ranks)[1] > max_width

    def as_dict(self) -> dict:
        """JSON-ready."""
        return {
            "low": [float(v) for v in self.low],
            "high": [float(v) for v in self.high],
            "alpha": self.alpha,
            "resamples": self.resamples,
            "seed": self.seed,
            "searches": self.searches,
            "clicks_per_rank": [int(c) for c in self.clicks],
        }


def bootstrap_propensities(
    ranks: np.ndarray,
    clicks: np.ndarray,
    features: np.ndarray,
    searches: np.ndarray,
    max_rank: int | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
    iterations: int = 50,
    l2: float = 1e-3,
) -> PropensityInterval:
    """How sure the examination curve is: :func:`estimate_propensities` re-run on searches
    drawn with replacement (a percentile bootstrap, Efron and Tibshirani, "An Introduction to
    the Bootstrap", 1993, ch. 13), so the clicks of one shown list stay together.

    Args:
        ranks, clicks, features: As for :func:`estimate_propensities`, shape ``(n,)``,
            ``(n,)``, ``(n, f)``.
        searches: The search (any integer id) of each row, shape ``(n,)``.
        max_rank: Ranks 1..max_rank (default: the largest rank seen).
        resamples: Bootstrap resamples (each one estimate: the cost is ``resamples`` fits).
        seed: Seed of the resampling.
        alpha: Two-sided error level, in (0, 1).
        iterations: Most EM iterations per resample (each starts from the whole data's fit).
        l2: L2 penalty of the relevance regression.

    Returns:
        A :class:`PropensityInterval`.

    Raises:
        ShopsearchError: ``resamples < 1``, ``alpha`` outside (0, 1), or no click at all.
        ValueError: Mismatched shapes (a bug of the caller).
    """
    if resamples < 1:
        raise ShopsearchError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < alpha < 1.0:
        raise ShopsearchError(f"alpha must be in (0, 1), got {alpha}")
    ranks = np.asarray(ranks, dtype=np.int64)
    clicks = np.asarray(clicks, dtype=np.float64)
    x = np.asarray(features, dtype=np.float64)
    searches = np.asarray(searches)
    if len(searches) != len(ranks):
        raise ValueError(f"{len(searches)} search ids for {len(ranks)} rows")
    if len(ranks) == 0 or clicks.sum() == 0:
        raise ShopsearchError("no click in the impressions: position bias cannot be estimated")
    k = int(max_rank or ranks.max())
    keep = ranks <= k
    ranks, clicks, x, searches = ranks[keep], clicks[keep], _standardized(x[keep]), searches[keep]
    full = _em(ranks, clicks, x, k, None, 200, 1e-4, l2)
    _, group = np.unique(searches, return_inverse=True)
    order = np.argsort(group, kind="stable")
    sizes = np.bincount(group)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    n_groups = len(sizes)
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(resamples):
        drawn = rng.integers(0, n_groups, size=n_groups)
        # the rows of the drawn searches: each search's run of rows in ``order``, repeated
        lengths = sizes[drawn]
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        rows = order[np.repeat(starts[drawn], lengths) + offsets]
        if clicks[rows].sum() == 0:
            continue
        # warm-started from the whole log's fit: a resample is near it, so EM needs few steps
        fit = _em(ranks[rows], clicks[rows], x[rows], k, full, iterations, 1e-4, l2)
        curves.append(fit.propensities.theta)
    if not curves:
        raise ShopsearchError("no resample had a click: position bias cannot be estimated")
    stack = np.vstack(curves)
    low, high = np.quantile(stack, [alpha / 2, 1 - alpha / 2], axis=0)
    per_rank = np.bincount(ranks - 1, weights=clicks, minlength=k)
    return PropensityInterval(
        low=low,
        high=high,
        alpha=alpha,
        resamples=len(curves),
        seed=seed,
        searches=n_groups,
        clicks=per_rank.astype(np.int64),
    )
