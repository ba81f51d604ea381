"""bench-depth on a tiny benchmark: the depths it accepts, the ranking at a depth, and each
depth's NDCG@10 against the pipeline searched at that depth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from research.bench_depth import check_depths, rank_at_depth
from research.cli import bench_depth_cmd
from retrieval.hits import RankedHit


@pytest.mark.parametrize(
    "value, message",
    [
        ("5,20", "between 10"),  # the pipeline reranks at least the k = 10 it returns
        ("10,101", "101"),  # deeper than the 100 hits retrieved
        ("10,abc", "integers separated by commas"),
        (",", "no rerank depth"),
    ],
)
def test_bad_depths_are_a_one_line_usage_error(tmp_path, value, message):
    argv = [str(tmp_path), "--index", str(tmp_path), "--reranker", "x", "--depths", value]
    result = CliRunner().invoke(bench_depth_cmd, argv)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--depths" in lines[0] and message in lines[0]
    assert "Traceback" not in result.output


def test_depths_are_sorted_unique_and_include_the_default():
    from rerank.pipeline import DEFAULT_RERANK_DEPTH

    assert check_depths([20, 10, 20]) == sorted({10, 20, DEFAULT_RERANK_DEPTH})


def test_the_ranking_at_depth_d_reranks_the_top_d_and_keeps_the_rest_in_retrieval_order():
    from rerank.blend import rerank_hits

    hits = [
        RankedHit(f"p{i:02d}", score=1.0 / (i + 1), retrieval=1.0 / (i + 1), retrieval_rank=i + 1)
        for i in range(40)
    ]
    cross = np.random.default_rng(0).normal(size=30).astype(np.float32)  # the top 30 scored
    for d in (10, 20, 30):
        ranked = rank_at_depth(hits, cross, d, 0.3)
        assert ranked[d:] == hits[d:]  # positions after d: retrieval order, untouched
        assert {h.product_id for h in ranked[:d]} == {h.product_id for h in hits[:d]}
        assert ranked[:d] == rerank_hits(hits[:d], cross[:d], 0.3)  # the pipeline's blend
        assert [h.product_id for h in ranked[:d]] != [h.product_id for h in hits[:d]]


@pytest.fixture()
def depth_setup(tmp_path, tiny_bench, tiny_model):
    """The tiny benchmark, an index of its catalog, and a (random, seeded) tiny reranker."""
    import torch

    from rerank.cross_encoder import new_cross_encoder, write_settings
    from research.bench_quality import _index_for
    from retrieval.encoder import BiEncoder

    reranker = tmp_path / "reranker"
    torch.manual_seed(0)
    new_cross_encoder(tiny_model.parent / "hf", device="cpu").save_pretrained(str(reranker))
    write_settings(reranker, retrieval_weight=0.3)
    encoder = BiEncoder(str(tiny_model), device="cpu")
    catalog = tiny_bench / "catalog.parquet"
    index = _index_for(encoder, catalog, tmp_path / "indexes", log=lambda m: None)
    return tiny_bench, index, reranker


@pytest.mark.slow
def test_bench_depth_matches_the_pipeline_at_every_depth_and_writes_its_files(
    tmp_path, depth_setup, monkeypatch
):
    from evaluation.data import load_benchmark
    from evaluation.metrics import evaluate
    from rerank.pipeline import DEFAULT_RERANK_DEPTH, SearchPipeline
    from research.bench_quality import scored_queries

    data, index, reranker = depth_setup
    work = tmp_path / "work"
    argv = [str(data), "--index", str(index), "--reranker", str(reranker), "--depths", "10,20,100"]
    argv += ["--latency-queries", "3", "--workdir", str(work), "--device", "cpu"]
    from rerank.cross_encoder import Reranker

    calls: list[tuple[int, int]] = []  # (distinct queries, pairs) per cross-encoder call
    score_pairs = Reranker.score_pairs

    def spy(self, pairs, batch_size=None):
        calls.append((len({q for q, _ in pairs}), len(pairs)))
        return score_pairs(self, pairs, batch_size)

    monkeypatch.setattr(Reranker, "score_pairs", spy)
    import research.bench_depth as bd

    depth_runs = bd.depth_runs

    def quality_only(*args, **kwargs):  # the calls of the quality pass, not of the latency one
        out = depth_runs(*args, **kwargs)
        calls.append((-1, -1))
        return out

    monkeypatch.setattr(bd, "depth_runs", quality_only)
    result = CliRunner().invoke(bench_depth_cmd, argv)
    assert result.exit_code == 0, result.output
    quality = calls[: calls.index((-1, -1))]
    # as a search scores them: one query's top d per call (int8 scores depend on the batch),
    # for each of the 30 queries at each depth
    assert len(quality) == 30 * 4 and all(n == 1 for n, _ in quality)
    assert {p for _, p in quality} >= {10, 20} and max(p for _, p in quality) <= 100
    for name in ("depth.json", "depth.md", "depth.png"):
        assert (work / name).stat().st_size > 100
        assert str(work / name) in result.stdout
    report = json.loads((work / "depth.json").read_text())
    rows = {r["depth"]: r for r in report["rows"]}
    assert sorted(rows) == sorted({10, 20, 100, DEFAULT_RERANK_DEPTH})
    assert report["queries_scored"] == 30 and report["retrieval_weight"] == 0.3
    assert report["machine"] and report["runtime"]["reranker"]["backend"] == "torch"
    # the default is the baseline: every other depth is tested against it, on both metrics
    assert rows[DEFAULT_RERANK_DEPTH]["comparisons"] == []
    for d in (10, 20, 100):
        tested = {c["metric"]: c for c in rows[d]["comparisons"]}
        assert set(tested) == {"ndcg@10", "recall@10"}
        assert tested["ndcg@10"]["mean_system"] == pytest.approx(rows[d]["means"]["ndcg@10"])
        assert 0.0 <= tested["ndcg@10"]["p_value"] <= 1.0
    # Recall@100 does not move with the depth
    assert {r["means"]["recall@100"] for r in rows.values()} == {report["recall_at_100"]}
    for r in rows.values():
        assert r["latency"]["n"] == 3 and 0 < r["latency"]["p50_ms"] <= r["latency"]["p99_ms"]
    md = (work / "depth.md").read_text()
    assert "| depth | NDCG@10 | p vs default |" in md and "at every depth" in md
    # at each depth, the NDCG@10 of what SearchPipeline.search(rerank_depth=d) returns, per query
    bench = load_benchmark(data)
    qids, texts, qrels, _ = scored_queries(bench, "test")
    with SearchPipeline.open(index, reranker=reranker, device="cpu") as pipeline:
        for d, row in rows.items():
            run = {
                q: {
                    h.product_id: float(10 - i)
                    for i, h in enumerate(pipeline.search(t, k=10, rerank_depth=d, mode="hybrid"))
                }
                for q, t in zip(qids, texts, strict=True)
            }
            ndcg = evaluate(
                qrels,
                run,
                metrics=("ndcg@10",),
                threshold=bench.threshold,
                gain_offset=bench.gain_offset,
            )["ndcg@10"]
            assert ndcg == pytest.approx(row["per_query"]["ndcg@10"]), d
    # and the depths are not all the same ranking (else the comparison above proves little)
    assert rows[10]["per_query"]["ndcg@10"] != rows[100]["per_query"]["ndcg@10"]
