"""Tests for evaluation.metrics: hand-computed cases, edge cases, and a cross-check with ranx."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from core.errors import ShopsearchError
from evaluation.metrics import (
    evaluate,
    judged_at_k,
    mean_scores,
    mrr_at_k,
    ndcg_at_k,
    parse_metric,
    precision_at_k,
    ranking,
    recall_at_k,
)

LOG2_3 = math.log2(3)  # 1.5849625
LOG2_5 = math.log2(5)  # 2.3219281

# Query A. Grades: p1=3.0, p2=2.0, p3=1.0, p4=2.67. Relevant (>= 2.5): {p1, p4}.
# Gains (grade - 1, clipped): p1=2.0, p2=1.0, p3=0.0, p4=1.67.
# Run ranking: p5 (unjudged), p1, p3, p2, p6 (unjudged); p4 is never retrieved.
QRELS_A = {"p1": 3.0, "p2": 2.0, "p3": 1.0, "p4": 2.67}
RUN_A = {"p5": 0.9, "p1": 0.8, "p3": 0.7, "p2": 0.6, "p6": 0.5}

# Query B (ties). Grades: a=3, b=3, c=1.5. Relevant: {a, b}. Gains: a=2, b=2, c=0.5.
# Scores z=2.0, and a=b=c=1.0 tied -> ties broken by product id: ranking z, a, b, c.
QRELS_B = {"a": 3.0, "b": 3.0, "c": 1.5}
RUN_B = {"b": 1.0, "a": 1.0, "c": 1.0, "z": 2.0}

# Query C: graded but nothing relevant (grades 2.0 and 1.0 < 2.5). Gains: x=1, y=0.
QRELS_C = {"x": 2.0, "y": 1.0}
RUN_C = {"y": 0.5, "x": 0.4}


def test_query_a_by_hand() -> None:
    # recall@3: top 3 = p5, p1, p3 -> 1 of the 2 relevant (p1) -> 1/2.
    assert recall_at_k(QRELS_A, RUN_A, 3) == 0.5
    # recall@10: the run has 5 products; p4 never retrieved -> still 1/2.
    assert recall_at_k(QRELS_A, RUN_A, 10) == 0.5
    # precision@3 = 1/3; precision@10 = 1/10 (divides by k even though only 5 retrieved).
    assert precision_at_k(QRELS_A, RUN_A, 3) == pytest.approx(1 / 3)
    assert precision_at_k(QRELS_A, RUN_A, 10) == pytest.approx(0.1)
    # First relevant (p1) at rank 2 -> MRR 1/2; with k=1 nothing relevant -> 0.
    assert mrr_at_k(QRELS_A, RUN_A, 10) == 0.5
    assert mrr_at_k(QRELS_A, RUN_A, 1) == 0.0
    # DCG@3  = 0/log2(2) + 2/log2(3) + 0/log2(4) = 2/1.5849625 = 1.2618595
    # IDCG@3 = gains sorted 2, 1.67, 1.0 -> 2/1 + 1.67/log2(3) + 1/log2(4)
    #        = 2 + 1.0536527 + 0.5 = 3.5536527
    # NDCG@3 = 1.2618595 / 3.5536527 = 0.3550880
    assert ndcg_at_k(QRELS_A, RUN_A, 3) == pytest.approx((2 / LOG2_3) / (2 + 1.67 / LOG2_3 + 0.5))
    assert ndcg_at_k(QRELS_A, RUN_A, 3) == pytest.approx(0.3550880, abs=1e-7)
    # DCG@5 adds p2 (gain 1) at rank 4: 1/log2(5) = 0.4306766 -> 1.6925361;
    # IDCG@5 adds p3 (gain 0) -> unchanged 3.5536527. NDCG@5 = 0.4762807.
    assert ndcg_at_k(QRELS_A, RUN_A, 5) == pytest.approx(0.4762807, abs=1e-7)
    # judged@5: p1, p3, p2 judged -> 3/5; judged@10 -> 3/10.
    assert judged_at_k(QRELS_A, RUN_A, 5) == 0.6
    assert judged_at_k(QRELS_A, RUN_A, 10) == pytest.approx(0.3)


def test_query_b_ties_by_hand() -> None:
    assert ranking(RUN_B) == ["z", "a", "b", "c"]
    # Top 2 = z, a: one of two relevant -> recall 1/2, precision 1/2, MRR 1/2 (a at rank 2).
    assert recall_at_k(QRELS_B, RUN_B, 2) == 0.5
    assert precision_at_k(QRELS_B, RUN_B, 2) == 0.5
    assert mrr_at_k(QRELS_B, RUN_B, 2) == 0.5
    # DCG@3  = 0 + 2/log2(3) + 2/log2(4) = 1.2618595 + 1 = 2.2618595
    # IDCG@3 = 2/1 + 2/log2(3) + 0.5/log2(4) = 2 + 1.2618595 + 0.25 = 3.5118595
    # NDCG@3 = 0.6440632
    assert ndcg_at_k(QRELS_B, RUN_B, 3) == pytest.approx(0.6440632, abs=1e-7)
    # DCG@4 adds c (gain 0.5) at rank 4: 0.5/log2(5) = 0.2153383 -> 2.4771978;
    # IDCG@4 has only 3 judged products -> 3.5118595. NDCG@4 = 0.7053807.
    assert ndcg_at_k(QRELS_B, RUN_B, 4) == pytest.approx(0.7053807, abs=1e-7)
    # Ties are broken by id whatever the dict order.
    assert ndcg_at_k(QRELS_B, dict(reversed(list(RUN_B.items()))), 3) == ndcg_at_k(
        QRELS_B, RUN_B, 3
    )


def test_ndcg_uses_graded_products_below_threshold() -> None:
    # Query C has no relevant product, but x (grade 2 -> gain 1) still earns NDCG:
    # DCG@2 = 0/1 + 1/log2(3) = 0.6309298; IDCG@2 = 1/1 + 0 = 1 -> NDCG 0.6309298.
    assert recall_at_k(QRELS_C, RUN_C, 2) == 0.0
    assert ndcg_at_k(QRELS_C, RUN_C, 2) == pytest.approx(1 / LOG2_3)
    # With gain_offset=0 gains are the grades: DCG = 1 + 2/log2(3) = 2.2618595,
    # IDCG = 2 + 1/log2(3) = 2.6309298 -> 0.8597186.
    assert ndcg_at_k(QRELS_C, RUN_C, 2, gain_offset=0.0) == pytest.approx(
        (1 + 2 / LOG2_3) / (2 + 1 / LOG2_3)
    )


def test_evaluate_skips_queries_without_relevant_and_zeroes_missing() -> None:
    qrels = {"A": QRELS_A, "B": QRELS_B, "C": QRELS_C, "D": {"d1": 3.0}}
    run = {"A": RUN_A, "B": RUN_B, "C": RUN_C, "extra": {"p1": 1.0}}
    per_query = evaluate(qrels, run, metrics=("recall@2", "ndcg@3", "mrr@10", "judged@5"))
    # C has no relevant product -> not scored; D is missing from the run -> zeros.
    assert set(per_query["recall@2"]) == {"A", "B", "D"}
    assert per_query["recall@2"] == {"A": 0.5, "B": 0.5, "D": 0.0}
    assert per_query["ndcg@3"]["D"] == 0.0
    assert per_query["judged@5"]["B"] == 3 / 5
    means = mean_scores(per_query)
    # mean recall@2 = (0.5 + 0.5 + 0) / 3; mean mrr@10 = (1/2 + 1/2 + 0) / 3.
    assert means["recall@2"] == pytest.approx(1 / 3)
    assert means["mrr@10"] == pytest.approx(1 / 3)
    assert means["ndcg@3"] == pytest.approx((0.3550880 + 0.6440632 + 0) / 3, abs=1e-7)


def test_threshold_changes_binary_metrics_only() -> None:
    qrels = {"C": QRELS_C}
    run = {"C": RUN_C}
    per_query = evaluate(qrels, run, metrics=("recall@1", "ndcg@2"), threshold=2.0)
    # Threshold 2.0 makes x relevant; x is at rank 2 -> recall@1 = 0.
    assert per_query["recall@1"] == {"C": 0.0}
    assert per_query["ndcg@2"]["C"] == pytest.approx(1 / LOG2_3)


def test_edge_cases() -> None:
    # Empty run: every metric 0.
    assert recall_at_k(QRELS_A, {}, 10) == 0.0
    assert precision_at_k(QRELS_A, {}, 10) == 0.0
    assert ndcg_at_k(QRELS_A, {}, 10) == 0.0
    assert mrr_at_k(QRELS_A, {}, 10) == 0.0
    assert judged_at_k(QRELS_A, {}, 10) == 0.0
    # No judgments at all: 0, not a division by zero.
    assert recall_at_k({}, RUN_A, 10) == 0.0
    assert ndcg_at_k({}, RUN_A, 10) == 0.0
    # Only grade-1 judgments: IDCG is 0 -> NDCG 0.
    assert ndcg_at_k({"p1": 1.0}, RUN_A, 10) == 0.0
    # k larger than the run is fine; a perfect run scores 1.
    assert ndcg_at_k({"p1": 3.0}, {"p1": 1.0}, 100) == 1.0
    assert recall_at_k({"p1": 3.0}, {"p1": 1.0}, 100) == 1.0
    with pytest.raises(ShopsearchError, match="k must be"):
        recall_at_k(QRELS_A, RUN_A, 0)
    # No queries with a relevant product -> empty per-query dicts, NaN means.
    per_query = evaluate({"C": QRELS_C}, {"C": RUN_C}, metrics=("ndcg@10",))
    assert per_query == {"ndcg@10": {}}
    assert math.isnan(mean_scores(per_query)["ndcg@10"])


@pytest.mark.parametrize("bad", ["ndcg", "ndcg@0", "map@10", "recall@x", "@5"])
def test_bad_metric_names(bad: str) -> None:
    with pytest.raises(ShopsearchError, match="unknown metric"):
        parse_metric(bad)


def _random_benchmark(seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    qrels: dict[str, dict[str, float]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(50):
        pool = [f"d{i}" for i in rng.choice(200, size=60, replace=False)]
        n_judged = int(rng.integers(3, 20))
        grades = rng.integers(1, 4, size=n_judged).astype(float)
        grades[0] = 3.0  # every query has a relevant product under both thresholds
        qrels[f"q{q}"] = dict(zip(pool[:n_judged], grades.tolist(), strict=True))
        retrieved = rng.permutation(pool)[: int(rng.integers(5, 60))]
        # Continuous scores: no ties, so ranx's sort and ours agree on the order.
        run[f"q{q}"] = dict(
            zip(retrieved.tolist(), rng.random(len(retrieved)).tolist(), strict=True)
        )
    del run["q7"]  # a query missing from the run scores 0 in both
    return qrels, run


@pytest.mark.parametrize("threshold", [2.0, 2.5])
def test_cross_check_with_ranx(threshold: float) -> None:
    ranx = pytest.importorskip("ranx")
    qrels, run = _random_benchmark(seed=7)
    # ranx wants integer grades; grades 1, 2, 3 -> gains 0, 1, 2 (our gain_offset=1).
    # A grade >= threshold (2 or 2.5, on integer grades 2 or 3) <=> gain >= rel_lvl (1 or 2).
    # ranx's "ndcg" is linear-gain; its rel_lvl drops judgments below it from DCG and IDCG,
    # so NDCG uses -l1 (gain-0 judgments contribute nothing either way).
    rel_lvl = math.ceil(threshold - 1)
    ranx_qrels = ranx.Qrels({q: {d: int(g - 1) for d, g in qs.items()} for q, qs in qrels.items()})
    ranx_run = ranx.Run(run)
    pairs = {
        "recall@10": f"recall@10-l{rel_lvl}",
        "recall@50": f"recall@50-l{rel_lvl}",
        "precision@10": f"precision@10-l{rel_lvl}",
        "mrr@10": f"mrr@10-l{rel_lvl}",
        "ndcg@10": "ndcg@10-l1",
        "ndcg@5": "ndcg@5-l1",
    }
    ours = evaluate(qrels, run, metrics=pairs, threshold=threshold, gain_offset=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ranx.evaluate(
            ranx_qrels, ranx_run, list(pairs.values()), return_mean=False, make_comparable=True
        )
    qids = list(ranx_qrels.keys())
    assert len(qids) == 50 and set(ours["ndcg@10"]) == set(qids)
    for ours_name, ranx_name in pairs.items():
        mine = np.array([ours[ours_name][q] for q in qids])
        np.testing.assert_allclose(mine, theirs[ranx_name], atol=1e-6, err_msg=ours_name)


def test_ndcg_of_scores_hand_worked():
    from evaluation.metrics import ndcg_of_scores

    # gains 0, 2, 1; scores put item 1 first, item 0 second, item 2 third
    # DCG = 2/log2(2) + 0/log2(3) + 1/log2(4) = 2.5; IDCG = 2 + 1/log2(3)
    got = ndcg_of_scores([0.5, 0.9, 0.1], [0.0, 2.0, 1.0], k=10)
    assert got == pytest.approx(2.5 / (2 + 1 / math.log2(3)))
    # ties keep list order: equal scores rank item 0 before item 1
    assert ndcg_of_scores([1.0, 1.0], [0.0, 1.0], k=1) == 0.0
    assert ndcg_of_scores([1.0, 1.0], [1.0, 0.0], k=1) == 1.0
    assert ndcg_of_scores([1.0], [0.0]) == 0.0
    with pytest.raises(ValueError):
        ndcg_of_scores([1.0], [1.0, 2.0])
