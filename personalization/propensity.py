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
    mean, std = x.mean(0), x.std(0)
    x = np.c_[(x - mean) / np.where(std > 1e-9, std, 1.0), np.ones(len(x))]
    counts = np.bincount(ranks - 1, minlength=k).astype(np.float64)
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
    return Propensities(theta=theta, iterations=done, converged=converged, impressions=counts)
