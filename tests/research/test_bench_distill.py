"""bench-distill's figures: the paired tests against the baseline model, the training lines
read from each model's train_report.json, and the command's NAME=FOLDER parsing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from research.bench_distill import DistillReport, compare, training_summary
from research.cli import bench_distill_cmd


def _per_query(shift: float, n: int = 60) -> dict[str, dict[str, float]]:
    """metric -> query -> value, as ``evaluation.metrics.evaluate`` gives them."""
    return {
        "ndcg@10": {f"q{i}": 0.3 + shift * (i % 2) for i in range(n)},
        "recall@100": {f"q{i}": 0.7 + shift for i in range(n)},
    }


def test_compare_tests_each_mode_against_the_baselines_same_mode():
    per_query = {
        "MNRL, dense": _per_query(0.0),
        "MNRL, hybrid": _per_query(0.1),
        "MarginMSE, dense": _per_query(0.2),
        "MarginMSE, hybrid": _per_query(0.1),
    }
    tests = compare(per_query, "MNRL")
    assert set(tests) == {"MarginMSE, dense", "MarginMSE, hybrid"}
    dense, hybrid = tests["MarginMSE, dense"], tests["MarginMSE, hybrid"]
    assert dense["ndcg@10_delta"] == pytest.approx(0.1)
    assert dense["recall@100_delta"] == pytest.approx(0.2)
    assert dense["ndcg@10_p"] < 0.01
    assert hybrid["ndcg@10_delta"] == pytest.approx(0.0) and hybrid["ndcg@10_p"] == 1.0


def test_training_summary_and_the_page(tmp_path):
    mnrl, kd = tmp_path / "mnrl", tmp_path / "kd"
    mnrl.mkdir()
    kd.mkdir()
    common = {"train_seconds": 700.0, "pairs_per_s": 30.0, "stopped_by": "time_budget"}
    common |= {"baseline_metric": 0.87, "best_metric": 0.9, "steps": 10}
    (mnrl / "train_report.json").write_text(
        json.dumps({**common, "pairs_trained": 21000, "details": {"loss": "MNRL"}})
    )
    details = {"loss": "MarginMSE", "teacher": "models/r", "teacher_pairs": 40000.0}
    details |= {"label_seconds": 160.0, "prep_seconds": 250.0, "hard_negatives": 1}
    details |= {"margin_scale": 4.5}
    (kd / "train_report.json").write_text(
        json.dumps({**common, "best_metric": 0.87, "pairs_trained": 15000, "details": details})
    )
    assert training_summary(tmp_path / "none") == {}
    got = training_summary(kd)
    assert got["loss"] == "MarginMSE" and got["teacher_pairs"] == 40000.0
    assert "teacher_pairs" not in training_summary(mnrl)
    m = {"ndcg@10": 0.4, "recall@100": 0.8}
    tests = {k: 0.01 for k in ("ndcg@10_delta", "ndcg@10_rel", "recall@100_delta")}
    tests |= {"recall@100_rel": 0.01, "ndcg@10_p": 0.0312, "recall@100_p": 0.2}
    report = DistillReport(
        queries=5,
        baseline="MNRL",
        systems={"MNRL, dense": m, "MarginMSE, dense": m},
        tests={"MarginMSE, dense": tests},
        training={"MNRL": training_summary(mnrl), "MarginMSE": got, "base": {}},
    )
    text = report.markdown()
    assert "| MarginMSE, dense | 0.4000 | 0.8000 | +0.0100 (+1.0%) | 0.0312 |" in text
    assert "| MNRL, dense | 0.4000 | 0.8000 |  |  |  |  |" in text
    assert "15,000 pairs in 700 s" in text
    assert "40,000 (query, product) pairs scored by the teacher in 160 s" in text
    assert text.count("labelling apart") == 1
    assert "student score 4.50 x cosine" in text
    # the distilled run never beat its start; a model without a report is said to be one
    assert text.count("the folder holds the starting model") == 1
    assert "- base: no `train_report.json`" in text


def test_command_refuses_a_model_without_a_name(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    got = CliRunner().invoke(bench_distill_cmd, [str(data), "--model", str(tmp_path)])
    assert got.exit_code == 2 and "NAME=FOLDER" in got.output


def test_run_indexes_each_model_and_scores_the_test_split(tmp_path, tiny_bench, tiny_model):
    """End to end on the tiny benchmark: the same model twice gives equal figures, p = 1."""
    from research.bench_distill import run

    report = run(
        tiny_bench,
        {"A": str(tiny_model), "B": str(tiny_model)},
        tmp_path / "work",
        log=lambda m: None,
    )
    assert report.queries > 0 and report.baseline == "A"
    assert set(report.systems) == {f"{m}, {mode}" for m in "AB" for mode in ("dense", "hybrid")}
    for mode in ("dense", "hybrid"):
        a, b = report.systems[f"A, {mode}"], report.systems[f"B, {mode}"]
        assert a == b and 0.0 <= a["ndcg@10"] <= 1.0 and 0.0 < a["recall@100"] <= 1.0
        assert report.tests[f"B, {mode}"]["ndcg@10_delta"] == 0.0
    assert (tmp_path / "work" / "report.md").read_text().count("| A, ") == 2
