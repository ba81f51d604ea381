"""The relevance blend: the cross-encoder's logits with the first stage's scores, and the one sort.

Benchmarks, training and the pipeline all rank through :func:`rerank_hits`: there is no second
copy of blend-and-sort.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from core.errors import ShopsearchError
from retrieval.hits import RankedHit

#: Weight of the first-stage score in the relevance score (the rest is the cross-encoder's):
#: 0.5 was best of {0, 0.3, 0.5, 0.7, 1} on the Home Depot validation split; ``shopsearch
#: bench`` re-chooses it on the validation split and saves it with the reranker.
DEFAULT_RETRIEVAL_WEIGHT = 0.5


def check_retrieval_weight(weight: object) -> float:
    """The blend weight as a float, when it is a number in [0, 1].

    Raises:
        ShopsearchError: Not a number, or outside [0, 1] (the one message for it).
    """
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
        raise ShopsearchError(f"retrieval_weight must be a number in [0, 1], got {weight!r}")
    return float(weight)


def _z(x: np.ndarray) -> np.ndarray:
    std = float(x.std()) if len(x) else 0.0
    return (x - x.mean()) / std if std > 1e-9 else np.zeros_like(x)


def blend(cross: np.ndarray | None, retrieval: np.ndarray, retrieval_weight: float) -> np.ndarray:
    """Relevance of one query's candidates: ``(1 - w) * z(cross) + w * z(retrieval)``.

    Both scores are standardised over the candidate list (their scales differ: logits vs RRF),
    so the first stage's fused evidence (dense + BM25) is kept next to the cross-encoder's.

    Args:
        cross: Cross-encoder logits, shape ``(n,)``; None without a cross-encoder (then the
            relevance is ``z(retrieval)``, on the same scale as a blend).
        retrieval: First-stage scores, shape ``(n,)``.
        retrieval_weight: ``w`` in [0, 1]; 0 returns the logits as they are.

    Returns:
        float32 array of shape ``(n,)``.
    """
    retrieval = np.asarray(retrieval, dtype=np.float32)
    if cross is None:
        return _z(retrieval).astype(np.float32)
    cross = np.asarray(cross, dtype=np.float32)
    if retrieval_weight <= 0:
        return cross
    return ((1 - retrieval_weight) * _z(cross) + retrieval_weight * _z(retrieval)).astype(
        np.float32
    )


def sort_hits(hits: Sequence[RankedHit], top_k: int | None = None) -> list[RankedHit]:
    """Hits by score descending; ties keep the first stage's order."""
    ranked = sorted(hits, key=lambda h: (-h.score, h.retrieval_rank))
    return ranked if top_k is None else ranked[:top_k]


def rerank_hits(
    hits: Sequence[RankedHit],
    cross: np.ndarray | None,
    retrieval_weight: float,
    top_k: int | None = None,
) -> list[RankedHit]:
    """The relevance stage: blends the logits with the stage-1 scores and sorts.

    Args:
        hits: The first stage's hits, best first.
        cross: Cross-encoder logits per hit ``(n,)``, or None without a cross-encoder.
        retrieval_weight: See :func:`blend`.
        top_k: Keep this many; None keeps all.

    Returns:
        Hits with ``relevance`` (and ``cross``) set and ``score = relevance``, best first.
    """
    if not hits:
        return []
    relevance = blend(cross, np.array([h.retrieval for h in hits]), retrieval_weight)
    scored = [
        replace(
            h,
            score=float(r),
            relevance=float(r),
            cross=None if cross is None else float(cross[i]),
        )
        for i, (h, r) in enumerate(zip(hits, relevance, strict=True))
    ]
    return sort_hits(scored, top_k)
