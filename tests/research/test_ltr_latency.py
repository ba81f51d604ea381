"""bench-ltr's latency section (research.bench_ltr_latency) and its --latency-only quick path.

The first implementation kept as the timing reference must still give the frozen values; the
measurement must count agreement between it and the fast one; the quick path must read what a
full run left in its workdir and say in one line when there is nothing to read.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from core.errors import ShopsearchError
from rerank.ltr import FEATURE_NAMES, LearnedRanker, ranker_features
from research import bench_ltr_latency as latency
from tests.rerank.test_ltr_features import cases
from training.ranker import CandidateList


def _ranker(trees: int = 8) -> LearnedRanker:
    import lightgbm as lgb

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, len(FEATURE_NAMES)))
    y = (x[:, FEATURE_NAMES.index("title_covered")] > 0).astype(int)
    booster = lgb.train(
        {"objective": "lambdarank", "verbosity": -1, "min_data_in_leaf": 5},
        lgb.Dataset(x, label=y, group=[10] * 30),
        trees,
    )
    return LearnedRanker(booster, {"reranker": None})


def _lists() -> list[CandidateList]:
    return [
        CandidateList(name, query, corrected, tuple(hits))
        for name, query, corrected, hits in cases()
    ]


@pytest.mark.parametrize("name,query,corrected,hits", cases(), ids=[c[0] for c in cases()])
def test_the_reference_is_the_first_implementation(name, query, corrected, hits):
    # the frozen fixtures: the reference and the fast function give the same values
    assert np.array_equal(
        latency.features_v1(query, hits, corrected),
        ranker_features(query, hits, corrected),
        equal_nan=True,
    )


def test_measure_times_every_pass_and_counts_agreement():
    got = latency.measure(_ranker(), _lists(), depth=50)
    n = len([c for c in cases() if c[3]])
    assert got["queries"] == n and got["trees"] == 8
    assert got["same_features"] == n and got["same_order"] == n
    for key in ("cold", "first", "warm", "warm_best3", "features", "predict", "sort"):
        assert 0 < got[f"{key}_p50"] <= got[f"{key}_p99"]
        if key in ("cold", "first", "warm", "warm_best3"):
            assert got[f"v1_{key}_p50"] > 0
    assert got["warm_best3_p50"] <= got["warm_p50"] and got["warm_best3_p99"] <= got["warm_p99"]
    assert got["baseline_trees"] == 8
    # the stage as it was (another model) is timed; agreement is still checked on one model
    old = latency.measure(_ranker(), _lists(), depth=50, baseline=_ranker(trees=3))
    assert old["baseline_trees"] == 3 and old["trees"] == 8
    assert old["same_order"] == n and old["same_features"] == n
    alone = latency.measure(_ranker(), _lists(), depth=50, reference=False)
    assert "v1_warm_p50" not in alone and "same_order" not in alone


def test_the_report_says_the_ratio_and_the_load():
    lat = {"queries": 10.0, "trees": 100.0, "same_features": 10.0, "same_order": 9.0}
    for key in ("cold", "first", "warm", "warm_best3"):
        lat.update({f"{key}_p50": 0.5, f"{key}_p99": 1.0})
        lat.update({f"v1_{key}_p50": 1.0, f"v1_{key}_p99": 4.0})
    for part in ("features", "predict", "sort"):
        lat.update({f"{part}_p50": 0.1, f"{part}_p99": 0.2})
    text = latency.LatencyReport(50, "runs/ltr/model-full", lat, 3.0, 2).markdown()
    assert "| warm (second pass" in text and "| 0.500 | 1.000 |" in text
    assert "warm 0.50 (p50), 0.25 (p99)" in text and "| warm, best of 3 per query" in text
    assert "same feature values on 10 of 10 lists, same order on 9" in text
    assert "(same model)" in text
    lat["baseline_trees"] = 404.0
    old = latency.LatencyReport(50, "m", lat, 0.5, 2, baseline="runs/ltr/model-full").markdown()
    assert "first implementation (with `runs/ltr/model-full` (404 trees)), warm" in old
    assert "(loaded:" in text and "100 trees" in text
    quiet = latency.LatencyReport(50, "m", lat, 0.5, 2).markdown()
    assert "(loaded:" not in quiet


def _index(tmp_path, build="b1"):
    index = tmp_path / "index"
    (index / "builds" / build).mkdir(parents=True)
    (index / "CURRENT").write_text(build)
    return index


def test_latency_only_reads_the_workdir_and_refuses_an_empty_one(tmp_path):
    index, work = _index(tmp_path), tmp_path / "work"
    work.mkdir()
    with pytest.raises(ShopsearchError) as err:
        latency.run(index, work, log=lambda m: None)
    assert "\n" not in str(err.value) and "lists-test-b1-k100.pkl" in str(err.value)
    with open(work / "lists-test-b1-k100.pkl", "wb") as fh:
        pickle.dump(_lists(), fh)
    _ranker().save(work / "model-full")
    report = latency.run(index, work, depth=3, log=lambda m: None)
    assert report.depth == 3 and report.model.endswith("model-full")
    assert report.latency_ms["same_order"] == report.latency_ms["queries"]


def test_the_cli_quick_path_writes_its_own_block(tmp_path):
    from research.cli import bench_ltr_cmd

    index, work = _index(tmp_path), tmp_path / "work"
    work.mkdir()
    with open(work / "lists-test-b1-k100.pkl", "wb") as fh:
        pickle.dump(_lists(), fh)
    _ranker().save(work / "model-full")
    page = tmp_path / "page.md"
    page.write_text("# page\n")
    data = tmp_path / "data"
    data.mkdir()
    _ranker(trees=3).save(tmp_path / "old")
    args = [str(data), str(index), "--workdir", str(work), "--latency-only", "--docs", str(page)]
    args += ["--latency-baseline", str(tmp_path / "old")]
    result = CliRunner().invoke(bench_ltr_cmd, args)
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert f"<!-- end written: {latency.REPORT_KEY} -->" in text
    assert "New / first implementation (with `" in text and "(3 trees)" in text
