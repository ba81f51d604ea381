"""What a shop's log says about each (query, product): clicks over expected clicks (COEC).

A product shown at rank 1 for a query gets clicked far more often than the same product at
rank 8, whatever its worth, so a raw click-through rate per (query, product) mostly echoes
where the old ranking put it. *Clicks over expected clicks* divides a product's clicks for a
query by the examinations its impressions should have drawn, ``sum over impressions of
theta(rank)``, with ``theta`` the examination probability per rank estimated from the same log
(:mod:`personalization.propensity`). Zhang and Jones, "Comparing Click Logs and Editorial
Labels for Training Query Rewriting", WWW 2007 workshop, and Chapelle and Zhang, "A Dynamic
Bayesian Network Click Model for Web Search Ranking", WWW 2009, use it; here it is smoothed
towards the log's overall ratio::

    coec(q, p) = (clicks(q, p) + alpha * prior) / (expected(q, p) + alpha)
    prior      = all clicks / all expected clicks

:class:`ClickStats` keeps the counts per rank (so ``theta`` can be applied when it is known),
and :func:`click_features` turns them into the model's two columns: ``log coec`` and
``log1p(expected)`` (how much evidence there is). With ``theta = 1`` everywhere (the naive
model) ``coec`` is the plain click-through rate.

The counts hold no shopper id: only normalised query texts, product ids and counts. They are
saved with the personalization model (``click_stats.npz``) and rebuilt by every
``train personal``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import ShopsearchError

#: Smoothing towards the log's overall clicks-over-expected ratio, in expected clicks.
ALPHA = 3.0
FILE = "click_stats.npz"


def normalize_query(query: str) -> str:
    """The key a query's counts are stored under: case-folded, spaces collapsed."""
    return " ".join(query.casefold().split())


@dataclass(frozen=True)
class ClickCounts:
    """What a log's counts say about some products for one query, at one point in time.

    Attributes:
        shown: Impressions of each product for the query, per rank, ``(n, max_rank)``.
        clicks: Their interactions, ``(n,)``.
        total_shown: Impressions per rank over the whole log so far, ``(max_rank,)``.
        total_clicks: Interactions over the whole log so far.
    """

    shown: np.ndarray
    clicks: np.ndarray
    total_shown: np.ndarray
    total_clicks: float

    def features(self, theta: Sequence[float] | None) -> np.ndarray:
        """:func:`click_features` of these counts under the examination curve ``theta``."""
        return click_features(self.shown, self.clicks, self.total_shown, self.total_clicks, theta)


class ClickStats:
    """Impressions per rank and interactions per (query, product), growing as a log is read.

    Args:
        max_rank: Ranks counted (deeper impressions are ignored).
    """

    def __init__(self, max_rank: int = 10) -> None:
        self.max_rank = max_rank
        self._rows: dict[tuple[str, str], int] = {}
        self._shown = np.zeros((0, max_rank), dtype=np.float64)
        self._clicks = np.zeros(0, dtype=np.float64)
        self.total_shown = np.zeros(max_rank, dtype=np.float64)
        self.total_clicks = 0.0

    def __len__(self) -> int:
        return len(self._rows)

    def _row(self, key: tuple[str, str]) -> int:
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = len(self._rows)
            if row >= len(self._clicks):
                grow = max(1024, len(self._clicks))
                self._shown = np.vstack([self._shown, np.zeros((grow, self.max_rank))])
                self._clicks = np.concatenate([self._clicks, np.zeros(grow)])
        return row

    def add(self, query: str, shown: Sequence[str], labels: Sequence[int], offset: int = 0) -> None:
        """Counts one shown list: each product's impression at its rank, and whether it got an
        interaction (click, cart or purchase: ``label > 0``). ``offset``: the ranks before the
        list (a later page: ``shown[i]`` was at rank ``offset + i + 1``)."""
        q = normalize_query(query)
        for rank, (pid, label) in enumerate(zip(shown, labels, strict=True), start=offset):
            if rank >= self.max_rank:
                break
            row = self._row((q, pid))
            self._shown[row, rank] += 1
            self.total_shown[rank] += 1
            if label > 0:
                self._clicks[row] += 1
                self.total_clicks += 1

    def lookup(self, query: str, product_ids: Sequence[str]) -> ClickCounts:
        """The counts of products for a query as they stand now (zeros for pairs never
        shown), with the log's totals."""
        q = normalize_query(query)
        shown = np.zeros((len(product_ids), self.max_rank))
        clicks = np.zeros(len(product_ids))
        for i, pid in enumerate(product_ids):
            row = self._rows.get((q, pid))
            if row is not None:
                shown[i] = self._shown[row]
                clicks[i] = self._clicks[row]
        return ClickCounts(shown, clicks, self.total_shown.copy(), self.total_clicks)

    def features(
        self, query: str, product_ids: Sequence[str], theta: Sequence[float] | None
    ) -> np.ndarray:
        """:func:`click_features` of products for a query, shape ``(n, 2)``."""
        return self.lookup(query, product_ids).features(theta)

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Writes ``click_stats.npz`` into ``out_dir``."""
        keys = sorted(self._rows, key=self._rows.get)
        path = Path(out_dir) / FILE
        np.savez_compressed(
            path,
            queries=np.array([k[0] for k in keys], dtype=str),
            products=np.array([k[1] for k in keys], dtype=str),
            shown=self._shown[: len(keys)].astype(np.float32),
            clicks=self._clicks[: len(keys)].astype(np.float32),
            total_shown=self.total_shown,
            total_clicks=np.array([self.total_clicks]),
        )
        return path

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str]) -> ClickStats:
        """Reads what :meth:`save` wrote.

        Raises:
            ShopsearchError: The file is missing or unreadable.
        """
        path = Path(model_dir) / FILE
        try:
            with np.load(path) as z:
                shown = z["shown"].astype(np.float64)
                out = cls(shown.shape[1] if shown.ndim == 2 else 10)
                out._rows = {
                    (str(q), str(p)): i
                    for i, (q, p) in enumerate(zip(z["queries"], z["products"], strict=True))
                }
                out._shown = shown.reshape(len(out._rows), out.max_rank)
                out._clicks = z["clicks"].astype(np.float64)
                out.total_shown = z["total_shown"].astype(np.float64)
                out.total_clicks = float(z["total_clicks"][0])
        except (OSError, KeyError, ValueError) as exc:
            raise ShopsearchError(
                f"{path}: missing or unreadable click counts ({exc}); retrain the model with "
                "'shopsearch train personal'"
            ) from exc
        return out


def click_features(
    shown: np.ndarray,
    clicks: np.ndarray,
    total_shown: np.ndarray,
    total_clicks: float,
    theta: Sequence[float] | None,
    alpha: float = ALPHA,
) -> np.ndarray:
    """``[log coec, log1p(expected clicks)]`` per product, float32 ``(n, 2)``.

    Args:
        shown: Impressions per rank, ``(n, max_rank)``.
        clicks: Interactions, ``(n,)``.
        total_shown: Impressions per rank over the whole log so far, ``(max_rank,)``.
        total_clicks: Interactions over the whole log so far.
        theta: Examination probability per rank (rank 1 = 1); None: 1 at every rank (no
            correction: plain click-through rates).
        alpha: Smoothing, in expected clicks.
    """
    shown = np.asarray(shown, dtype=np.float64)
    width = shown.shape[1] if shown.ndim == 2 else len(total_shown)
    t = np.ones(width) if not theta else np.asarray(theta, dtype=np.float64)[:width]
    if len(t) < width:  # ranks past the estimated ones take the last value
        t = np.r_[t, np.full(width - len(t), t[-1])]
    expected = shown.reshape(-1, width) @ t
    total_expected = float(np.asarray(total_shown, dtype=np.float64)[:width] @ t)
    prior = total_clicks / total_expected if total_expected > 0 else 0.0
    if prior <= 0:
        return np.zeros((len(expected), 2), dtype=np.float32)
    coec = (np.asarray(clicks, dtype=np.float64) + alpha * prior) / (expected + alpha)
    return np.c_[np.log(coec / prior), np.log1p(expected)].astype(np.float32)
