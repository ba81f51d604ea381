"""bench-ltr's cross-encoder stages: which lists the learned stage trains on, the logits put on
them, and the page's blend column and end-to-end table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.labels import Judgments
from research.bench_ltr import (
    BLEND,
    LtrReport,
    reranker_train_queries,
    sample_lists,
    with_cross,
)
from retrieval.hits import RankedHit
from training.common import REPORT_NAME
from training.config import RerankerTrainConfig
from training.ranker import CandidateList
from training.reranker import select_train_queries


def _list(qid: str, n: int = 6, corrected: str | None = None) -> CandidateList:
    hits = tuple(
        RankedHit(f"{qid}-{i}", 1.0 / (i + 1), 1.0 / (i + 1), i + 1, payload={"title": f"t{i}"})
        for i in range(n)
    )
    return CandidateList(qid, f"query {qid}", corrected, hits)


def _judgments(n: int = 40) -> Judgments:
    texts = {f"p{i}": f"product {i}" for i in range(n)}
    queries = {"train": {f"q{i}": f"query {i}" for i in range(n)}}
    qrels = {"train": {f"q{i}": {f"p{i}": 3.0} for i in range(n)}}
    return Judgments(texts, queries, qrels, threshold=2.5, gain_offset=1.0)


def test_sample_lists_leaves_out_the_excluded_and_is_seeded():
    lists = [_list(f"q{i}") for i in range(30)]
    excluded = {f"q{i}" for i in range(0, 30, 3)}
    got = sample_lists(lists, 8, excluded, seed=5)
    assert len(got) == 8
    assert not {item.query_id for item in got} & excluded
    assert [item.query_id for item in got] == [
        item.query_id for item in sample_lists(lists, 8, excluded, seed=5)
    ]
    assert [item.query_id for item in got] != [
        item.query_id for item in sample_lists(lists, 8, excluded, seed=6)
    ]
    order = [int(item.query_id[1:]) for item in got]
    assert order == sorted(order)  # the lists' own order is kept
    assert len(sample_lists(lists, None, excluded, seed=5)) == 20


class _Fake:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def score(self, query: str, texts: list[str]) -> np.ndarray:
        self.calls.append((query, list(texts)))
        return np.arange(len(texts), dtype=np.float32) + 0.5


def test_with_cross_scores_the_top_depth_with_the_corrected_query():
    fake = _Fake()
    got = with_cross([_list("a"), _list("b", corrected="fixed b")], fake, 4, log=lambda _: None)
    assert [q for q, _ in fake.calls] == ["query a", "fixed b"]
    assert all(len(texts) == 4 for _, texts in fake.calls)
    for item in got:
        assert [h.cross for h in item.hits] == [0.5, 1.5, 2.5, 3.5, None, None]
        assert [h.product_id for h in item.hits] == [f"{item.query_id}-{i}" for i in range(6)]


def test_reranker_train_queries_redraws_the_recorded_sample(tmp_path):
    data = _judgments()
    (tmp_path / REPORT_NAME).write_text(
        json.dumps({"config": {"seed": 7, "max_queries": 10, "train_fraction": 1.0}})
    )
    got = reranker_train_queries(tmp_path, data)
    assert len(got) == 10
    assert got == set(select_train_queries(data, RerankerTrainConfig(seed=7, max_queries=10)))
    assert got != set(select_train_queries(data, RerankerTrainConfig(seed=8, max_queries=10)))
    assert reranker_train_queries(tmp_path / "elsewhere", data) == set()


def _report(end_to_end: dict[str, float]) -> LtrReport:
    m = {"ndcg@10": 0.4, "recall@100": 0.8}
    return LtrReport(
        queries=9,
        depth=50,
        systems={"BM25": m, "hybrid": m, BLEND: m, "hybrid + learned stage": m},
        tests={
            "hybrid": {"bm25_delta": 0.0, "bm25_rel": 0.0, "bm25_p": 1.0},
            BLEND: {
                "hybrid_delta": 0.01,
                "hybrid_rel": 0.02,
                "hybrid_p": 0.5,
                "bm25_delta": 0.01,
                "bm25_rel": 0.02,
                "bm25_p": 0.4,
            },
            "hybrid + learned stage": {
                "hybrid_delta": 0.03,
                "hybrid_rel": 0.07,
                "hybrid_p": 0.001,
                "bm25_delta": 0.03,
                "bm25_rel": 0.07,
                "bm25_p": 0.001,
                "blend_delta": 0.0234,
                "blend_rel": 0.05,
                "blend_p": 0.0123,
            },
        },
        training={},
        importance={"cross": 2.0, "bm25_score": 1.0},
        latency_ms={
            k: 1.0 for k in ("cold", "served", "predict") for k in (f"{k}_p50", f"{k}_p99")
        },
        load=1.0,
        reranker="models/x",
        train_lists=1500,
        excluded_queries=2000,
        end_to_end_ms=end_to_end,
    )


def test_page_has_the_blend_column_and_the_end_to_end_table():
    text = _report({"queries": 7.0, "blend_p50": 101.25, "blend_p99": 150.0}).markdown()
    rows = [line for line in text.splitlines() if line.startswith("| hybrid + learned stage |")]
    assert rows and "+0.0234 (+5.0%) | 0.0123 |" in rows[0]
    assert "vs blend | p |" in text
    assert "1,500 lists" in text and "2,000" in text
    assert "| retrieve + cross-encoder blend | 101.2 | 150.0 |" in text
    assert "first 7 test queries" in text
    assert "retrieve + learned stage, no cross-encoder" not in text  # not timed, not shown


def test_page_without_a_cross_encoder_has_neither():
    report = _report({})
    systems = {k: v for k, v in report.systems.items() if k != BLEND}
    text = LtrReport(**{**report.as_dict(), "systems": systems}).markdown()
    assert "vs blend" not in text
    assert "End to end" not in text


@pytest.mark.slow
def test_run_scores_every_stage_and_the_int8_cross_encoder(tmp_path, tiny_bench, tiny_model):
    """The whole bench on the tiny benchmark, with an (untrained) cross-encoder and its int8
    export: every stage is scored, and the int8 stages are paired-tested against fp32."""
    pytest.importorskip("onnxruntime")
    from indexer.build import index_catalog
    from inference import backend as rb
    from rerank.cross_encoder import new_cross_encoder
    from research.bench_ltr import run
    from retrieval.encoder import BiEncoder
    from retrieval.store import IndexLocation

    index = tmp_path / "index"
    index_catalog(
        tiny_bench / "catalog.parquet",
        IndexLocation(path=index),
        encoder=BiEncoder(tiny_model, device="cpu"),
        progress=False,
    )
    rr = tmp_path / "rr"
    new_cross_encoder(tiny_model, device="cpu").save_pretrained(str(rr))
    rb.optimize(rr, backend="onnx", quantize="int8")
    report = run(
        tiny_bench,
        index,
        tmp_path / "work",
        depth=10,
        reranker=str(rr),
        threads=1,
        log=lambda m: None,
        e2e_queries=0,
        variant=("onnx", "int8"),
    )
    int8 = {n for n in report.systems if "onnx:int8" in n}
    assert int8 == {f"{BLEND}, onnx:int8", "hybrid + learned stage, onnx:int8 cross-encoder"}
    assert set(report.variant_tests) == int8
    for name in ("BM25", "hybrid", BLEND, "hybrid + learned stage"):
        assert 0.0 <= report.systems[name]["ndcg@10"] <= 1.0
    text = report.markdown()
    assert "The cross-encoder as `onnx:int8`" in text
    assert report.variant == "onnx:int8"
