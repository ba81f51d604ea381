"""Ranking metrics over ranx-style qrels and runs: recall, precision, NDCG, MRR, judged share.

Conventions (shared by every function here):

* ``Qrels`` maps query_id -> product_id -> grade; ``Run`` maps query_id -> product_id -> score.
* A run's ranking is score descending, ties broken by product_id ascending, so results are
  deterministic whatever the dict order.
* Recall, precision and MRR are binary: a product is relevant iff its grade >= ``threshold``.
* NDCG is graded: gain = ``max(grade - gain_offset, 0)`` (Home Depot: grades 1..3 -> gains
  0..2), discount ``log2(rank + 1)``. The gain is *linear* (Järvelin & Kekäläinen; ranx's
  ``"ndcg"``), not exponential ``2**gain - 1`` (Burges; ranx's ``"ndcg_burges"``). The ideal
  DCG ranks *all* judged products of the query by gain, including graded ones below the
  relevance threshold (a grade-2 product still has gain 1 and can be rewarded); the threshold
  plays no part in NDCG.
* Products without a judgment for the query are not relevant and have gain 0.
* Cut-off metrics divide by ``k`` (precision, judged), even when the run holds fewer than k.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from core.errors import ShopsearchError

Qrels = dict[str, dict[str, float]]
Run = dict[str, dict[str, float]]

DEFAULT_METRICS = (
    "recall@10",
    "recall@50",
    "recall@100",
    "precision@10",
    "ndcg@10",
    "mrr@10",
    "judged@10",
)
METRIC_NAMES = ("recall", "precision", "ndcg", "mrr", "judged")


def ranking(run_q: Mapping[str, float]) -> list[str]:
    """Product ids of one query's run, best first (score descending, then product_id)."""
    return [pid for pid, _ in sorted(run_q.items(), key=lambda kv: (-kv[1], kv[0]))]


def _check_k(k: int) -> None:
    if k < 1:
        raise ShopsearchError(f"k must be >= 1, got {k}")


def _recall(qrels_q: Mapping[str, float], ranked: Sequence[str], k: int, threshold: float) -> float:
    relevant = {pid for pid, grade in qrels_q.items() if grade >= threshold}
    if not relevant:
        return 0.0
    return sum(1 for pid in ranked[:k] if pid in relevant) / len(relevant)


def _precision(
    qrels_q: Mapping[str, float], ranked: Sequence[str], k: int, threshold: float
) -> float:
    hits = sum(1 for pid in ranked[:k] if qrels_q.get(pid, -math.inf) >= threshold)
    return hits / k


def _mrr(qrels_q: Mapping[str, float], ranked: Sequence[str], k: int, threshold: float) -> float:
    for rank, pid in enumerate(ranked[:k], start=1):
        if qrels_q.get(pid, -math.inf) >= threshold:
            return 1.0 / rank
    return 0.0


def _gain(grade: float, gain_offset: float) -> float:
    return max(grade - gain_offset, 0.0)


def _ndcg(qrels_q: Mapping[str, float], ranked: Sequence[str], k: int, gain_offset: float) -> float:
    ideal = sorted((_gain(g, gain_offset) for g in qrels_q.values()), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    if idcg == 0.0:
        return 0.0
    dcg = sum(
        _gain(qrels_q[pid], gain_offset) / math.log2(rank + 1)
        for rank, pid in enumerate(ranked[:k], start=1)
        if pid in qrels_q
    )
    return dcg / idcg


def _judged(qrels_q: Mapping[str, float], ranked: Sequence[str], k: int) -> float:
    return sum(1 for pid in ranked[:k] if pid in qrels_q) / k


def recall_at_k(
    qrels_q: Mapping[str, float], run_q: Mapping[str, float], k: int, threshold: float = 2.5
) -> float:
    """Share of the query's relevant products found in the top k (0.0 when none is relevant).

    Args:
        qrels_q: product_id -> grade for one query.
        run_q: product_id -> score for the same query.
        k: Cut-off, >= 1.
        threshold: Minimum grade of a relevant product.
    """
    _check_k(k)
    return _recall(qrels_q, ranking(run_q), k, threshold)


def precision_at_k(
    qrels_q: Mapping[str, float], run_q: Mapping[str, float], k: int, threshold: float = 2.5
) -> float:
    """Relevant products in the top k divided by k (a run shorter than k is not excused)."""
    _check_k(k)
    return _precision(qrels_q, ranking(run_q), k, threshold)


def mrr_at_k(
    qrels_q: Mapping[str, float], run_q: Mapping[str, float], k: int, threshold: float = 2.5
) -> float:
    """Reciprocal rank of the first relevant product within the top k, else 0.0."""
    _check_k(k)
    return _mrr(qrels_q, ranking(run_q), k, threshold)


def ndcg_at_k(
    qrels_q: Mapping[str, float], run_q: Mapping[str, float], k: int, gain_offset: float = 1.0
) -> float:
    """NDCG@k with linear gains ``max(grade - gain_offset, 0)`` and a log2 discount.

    The ideal DCG ranks every judged product of the query by gain (no threshold). Returns 0.0
    when no judged product has a positive gain.
    """
    _check_k(k)
    return _ndcg(qrels_q, ranking(run_q), k, gain_offset)


def ndcg_of_scores(scores: Sequence[float], gains: Sequence[float], k: int = 10) -> float:
    """NDCG@k of one list scored in place: ``gains[i]`` is the true gain of item ``i``.

    For lists whose items are positions rather than product ids (a search's candidates
    against each shopper's utility). Ties in ``scores`` keep list order (the first stage's).

    Args:
        scores: The ranker's score per item, shape ``(n,)``.
        gains: The true gain per item (>= 0), shape ``(n,)``.
        k: Cut-off.

    Returns:
        NDCG@k in [0, 1]; 0.0 when no item has a positive gain.
    """
    _check_k(k)
    if len(scores) != len(gains):
        raise ValueError(f"{len(scores)} scores for {len(gains)} gains")
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    qrels = {str(i): float(g) for i, g in enumerate(gains)}
    return _ndcg(qrels, [str(i) for i in order], k, 0.0)


def judged_at_k(qrels_q: Mapping[str, float], run_q: Mapping[str, float], k: int) -> float:
    """Share of the top k that carries any grade (judged products / k): label coverage."""
    _check_k(k)
    return _judged(qrels_q, ranking(run_q), k)


def parse_metric(metric: str) -> tuple[str, int]:
    """Split ``"ndcg@10"`` into ``("ndcg", 10)``.

    Raises:
        ShopsearchError: Unknown metric name or a missing/invalid cut-off.
    """
    name, sep, cutoff = metric.partition("@")
    if name not in METRIC_NAMES or not sep or not cutoff.isdigit() or int(cutoff) < 1:
        raise ShopsearchError(
            f"unknown metric {metric!r}: use NAME@K with NAME one of "
            f"{', '.join(METRIC_NAMES)} and K >= 1, e.g. 'ndcg@10'"
        )
    return name, int(cutoff)


def evaluate(
    qrels: Mapping[str, Mapping[str, float]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Iterable[str] = DEFAULT_METRICS,
    threshold: float = 2.5,
    gain_offset: float = 1.0,
) -> dict[str, dict[str, float]]:
    """Per-query scores of a run.

    Only queries of ``qrels`` with at least one relevant product (grade >= threshold) are
    scored; a query missing from the run scores 0 on every metric. Run queries absent from
    the qrels are ignored.

    Args:
        qrels: query_id -> product_id -> grade.
        run: query_id -> product_id -> score.
        metrics: Names such as ``"recall@100"`` (see :data:`METRIC_NAMES`).
        threshold: Minimum grade of a relevant product (recall, precision, MRR).
        gain_offset: NDCG gain is ``max(grade - gain_offset, 0)``.

    Returns:
        metric -> query_id -> value.
    """
    parsed = [(metric, *parse_metric(metric)) for metric in metrics]
    out: dict[str, dict[str, float]] = {metric: {} for metric, _, _ in parsed}
    for qid, qrels_q in qrels.items():
        if not any(grade >= threshold for grade in qrels_q.values()):
            continue
        ranked = ranking(run.get(qid, {}))
        for metric, name, k in parsed:
            if name == "recall":
                value = _recall(qrels_q, ranked, k, threshold)
            elif name == "precision":
                value = _precision(qrels_q, ranked, k, threshold)
            elif name == "mrr":
                value = _mrr(qrels_q, ranked, k, threshold)
            elif name == "ndcg":
                value = _ndcg(qrels_q, ranked, k, gain_offset)
            else:
                value = _judged(qrels_q, ranked, k)
            out[metric][qid] = value
    return out


def mean_scores(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean over queries of each metric (NaN for a metric with no query)."""
    return {
        metric: (sum(values.values()) / len(values) if values else math.nan)
        for metric, values in per_query.items()
    }
