"""The learned final stage (rerank.ltr): the feature vector, the saved model, the pipeline.

Features are checked against values worked out by hand on tiny lists; a saved model must score
the same candidates the same way after reopening, refuse another feature list in one line, and
take the blend's place in ``SearchPipeline``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from core.errors import ShopsearchError
from rerank.ltr import FEATURE_NAMES, META_FILE, LearnedRanker, ranker_features
from retrieval.hits import Hits, QueryCorrection, RankedHit


def hit(pid, title, rank, *, fused=None, bm25=None, dense=None, cross=None, **payload):
    sources = []
    if dense is not None:
        sources.append(("dense", dense[0], dense[1]))
    if bm25 is not None:
        sources.append(("bm25", bm25[0], bm25[1]))
    score = fused if fused is not None else 1.0 / (60 + rank)
    return RankedHit(
        pid,
        score,
        score,
        rank,
        cross=cross,
        payload={"title": title, **payload},
        sources=tuple(sources),
    )


def col(x: np.ndarray, name: str) -> np.ndarray:
    return x[:, FEATURE_NAMES.index(name)]


def test_features_by_hand_words_numbers_units_models_brand():
    hits = [
        hit(
            "a",
            "DEWALT 18-Volt 1/2 in. Hammer Drill DCD771",
            1,
            fused=0.03,
            bm25=(20.0, 1),
            dense=(0.8, 2),
            price=99.0,
            in_stock=True,
        ),
        hit("b", "Makita 12-Volt 3/8 in. Drill", 2, fused=0.015, bm25=(10.0, 2)),
    ]
    # tokens: dewalt, 18, 18v, drill, 0.5, 0.5in, dcd771 -> 7 distinct
    x = ranker_features("dewalt 18v drill 1/2 in. dcd771", hits)
    assert x.shape == (2, len(FEATURE_NAMES)) and x.dtype == np.float32
    assert col(x, "query_tokens").tolist() == [7, 7]
    assert col(x, "title_matched").tolist() == [7, 1]  # b: only "drill"
    assert col(x, "title_covered")[1] == pytest.approx(1 / 7)
    assert col(x, "words_covered").tolist() == [1.0, 0.5]  # dewalt, drill
    assert col(x, "numbers_in_query")[0] == 2  # 18 and 0.5
    assert col(x, "numbers_covered").tolist() == [1.0, 0.0]
    assert col(x, "measures_in_query")[0] == 2  # 18v and 0.5in
    assert col(x, "measures_covered").tolist() == [1.0, 0.0]
    assert col(x, "models_in_query")[0] == 1
    assert col(x, "models_covered").tolist() == [1.0, 0.0]
    assert col(x, "first_word_matched").tolist() == [1.0, 0.0]  # dewalt
    assert col(x, "last_word_matched").tolist() == [1.0, 1.0]  # drill
    assert col(x, "brand_matched").tolist() == [1.0, 0.0]  # title's first word: dewalt / makita
    assert col(x, "title_tokens").tolist() == [8, 6]  # 18-Volt: 18, 18v; 1/2 in.: 0.5, 0.5in
    # the first stage per source; relative to the best candidate
    assert col(x, "fused_rank").tolist() == [1, 2]
    assert col(x, "fused_score_rel").tolist() == pytest.approx([1.0, 0.5])
    assert col(x, "bm25_score_rel").tolist() == pytest.approx([1.0, 0.5])
    assert col(x, "dense_score")[0] == pytest.approx(0.8) and math.isnan(col(x, "dense_score")[1])
    assert col(x, "dense_rank")[0] == 2 and math.isnan(col(x, "dense_rank")[1])
    # no cross-encoder ran, no fields: missing (NaN), not 0
    assert np.isnan(col(x, "cross")).all() and np.isnan(col(x, "cross_gap")).all()
    assert col(x, "price")[0] == 99.0 and math.isnan(col(x, "price")[1])
    assert col(x, "in_stock")[0] == 1.0
    assert col(x, "corrected").tolist() == [0.0, 0.0]


def test_features_read_the_correction_and_the_cross_encoder():
    hits = [
        hit("a", "Brilliant White Interior Paint", 1, cross=2.0, brand="Behr"),
        hit("b", "Red Paint", 2, cross=-1.0),
    ]
    typed = ranker_features("wihte paint", hits)
    fixed = ranker_features("wihte paint", hits, corrected="white paint")
    assert col(typed, "title_covered").tolist() == [0.5, 0.5]
    assert col(fixed, "title_covered").tolist() == [1.0, 0.5]
    assert col(fixed, "corrected").tolist() == [1.0, 1.0]
    assert col(fixed, "cross").tolist() == [2.0, -1.0]
    assert col(fixed, "cross_gap").tolist() == [0.0, -3.0]
    assert col(fixed, "brand_matched")[0] == 0.0  # the brand field (behr), not the first word
    assert col(fixed, "pairs_covered").tolist() == [0.0, 0.0]  # "white paint" not adjacent


def test_no_candidates_and_one_word_queries():
    assert ranker_features("drill", []).shape == (0, len(FEATURE_NAMES))
    x = ranker_features("drill", [hit("a", "Drill", 1)])
    assert math.isnan(col(x, "pairs_covered")[0])  # one token: no pair to cover
    assert math.isnan(col(x, "numbers_covered")[0])  # no number asked for


def _tiny_ranker() -> LearnedRanker:
    """A booster fitted on random features: enough to check saving and scoring."""
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(FEATURE_NAMES)))
    y = (x[:, FEATURE_NAMES.index("title_covered")] > 0).astype(int)
    data = lgb.Dataset(x, label=y, group=[20] * 20)
    booster = lgb.train(
        {"objective": "lambdarank", "verbosity": -1, "min_data_in_leaf": 5}, data, 10
    )
    return LearnedRanker(booster, {"reranker": None})


LIST = [
    hit("a", "DEWALT 18-Volt Drill", 1, bm25=(9.0, 1)),
    hit("b", "Ryobi 18-Volt Drill Kit", 2, bm25=(8.0, 2)),
    hit("c", "Paint Roller 9 in.", 3, bm25=(2.0, 3)),
]


def test_a_saved_model_scores_the_same_after_reopening(tmp_path):
    ranker = _tiny_ranker()
    before = ranker.score("18v drill", LIST)
    ranker.save(tmp_path / "r")
    again = LearnedRanker.open(tmp_path / "r")
    assert np.array_equal(again.score("18v drill", LIST), before)
    meta = json.loads((tmp_path / "r" / META_FILE).read_text())
    assert meta["features"] == list(FEATURE_NAMES)
    assert meta["lightgbm"] and meta["shopsearch"] and meta["fingerprint"] == again.fingerprint
    ranked = again.rank("18v drill", LIST)
    assert [h.score for h in ranked] == sorted(before, reverse=True)
    assert all(h.relevance == h.score for h in ranked)


def test_a_saved_model_refuses_other_features(tmp_path):
    _tiny_ranker().save(tmp_path / "r")
    meta_path = tmp_path / "r" / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["features"] = [n for n in meta["features"] if n != "measures_covered"] + ["old_one"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ShopsearchError) as err:
        LearnedRanker.open(tmp_path / "r")
    message = str(err.value)
    assert "\n" not in message
    assert "measures_covered" in message and "old_one" in message
    assert "retrain" in message


def test_not_a_ranker_folder(tmp_path):
    with pytest.raises(ShopsearchError, match="not a learned ranker folder"):
        LearnedRanker.open(tmp_path)


def test_a_model_trained_without_a_cross_encoder_refuses_one():
    ranker = _tiny_ranker()
    ranker.check_reranker(None)
    with pytest.raises(ShopsearchError, match="without a cross-encoder"):
        ranker.check_reranker("abc123")
    ranker.meta["reranker"] = "abc123"
    with pytest.raises(ShopsearchError, match="reranker abc123"):
        ranker.check_reranker(None)


def test_the_pipeline_ranks_by_the_learned_score(storefront_index, tiny_encoder):
    from rerank.pipeline import SearchPipeline
    from retrieval.retriever import Retriever

    ranker = _tiny_ranker()
    retriever = Retriever.open(storefront_index, encoder=tiny_encoder)
    with SearchPipeline(retriever, ranker=ranker) as pipeline:
        query = "cordless drill"
        got = pipeline.search(query, k=10, rules=False)
        candidates = retriever.search(query, k=50)
        expected = ranker.score(candidates.corrected or query, candidates, candidates.corrected)
        by_id = dict(zip([h.product_id for h in candidates], expected, strict=True))
        assert [h.score for h in got] == sorted(by_id.values(), reverse=True)[:10]
        assert all(h.relevance == pytest.approx(by_id[h.product_id]) for h in got)
        assert pipeline.relevance_source()["ranker"] == ranker.fingerprint


def test_hits_know_their_correction():
    hits = Hits([], QueryCorrection("wihte", "white", (("wihte", "white"),)))
    assert hits.corrected == "white"


def test_the_service_opens_the_ranker_named_by_its_variable(monkeypatch):
    from rerank.pipeline import SearchPipeline
    from shopsearch.service.runtime import open_pipeline
    from shopsearch.service.settings import ServiceSettings

    seen: list[dict] = []
    monkeypatch.setattr(
        SearchPipeline, "open", classmethod(lambda cls, index=None, **kw: seen.append(kw))
    )
    monkeypatch.setenv("SHOPSEARCH_RANKER", "/models/ranker")
    open_pipeline(ServiceSettings(index="x"))
    assert seen[-1]["ranker"] == "/models/ranker"
    monkeypatch.setenv("SHOPSEARCH_RANKER", " ")  # blank is unset
    open_pipeline(ServiceSettings(index="x"))
    assert seen[-1]["ranker"] is None


def test_rescoring_a_hit_is_replace_on_every_field():
    from dataclasses import fields, replace

    from rerank.ltr import _rescored

    h = RankedHit(
        "a",
        0.5,
        0.25,
        3,
        relevance=None,
        cross=1.5,
        personal=0.1,
        rule=(("r1", "boost"),),
        payload={"title": "Drill"},
        vector=np.ones(4, dtype=np.float32),
        sources=(("bm25", 9.0, 1),),
    )
    got, expected = _rescored(h, 7.0), replace(h, score=7.0, relevance=7.0)
    assert type(got) is RankedHit and got == expected
    for f in fields(RankedHit):  # compare=False fields too (vector, sources)
        assert getattr(got, f.name) is getattr(expected, f.name) or (
            getattr(got, f.name) == getattr(expected, f.name)
        ), f.name
    assert h.score == 0.5 and h.relevance is None  # the input is left as it was
    with pytest.raises(AttributeError):
        got.score = 1.0  # still frozen


def test_rank_orders_as_sort_hits_with_ties_and_top_k():
    from rerank.blend import sort_hits

    class Fixed:
        def __init__(self, scores):
            self.scores = np.asarray(scores, dtype=np.float64)

        def predict(self, x, num_threads=1):
            return self.scores

    # ties on score, broken by the first stage's rank, then by the order given
    hits = [hit(p, "t", r) for p, r in (("a", 3), ("b", 1), ("c", 2), ("d", 2), ("e", 5))]
    scores = [0.5, 0.5, 0.5, 0.5, 0.9]
    ranker = LearnedRanker(Fixed(scores), {"reranker": None})
    from dataclasses import replace

    expected = sort_hits(
        [replace(h, score=s, relevance=s) for h, s in zip(hits, scores, strict=True)]
    )
    got = ranker.rank("q", hits)
    assert [h.product_id for h in got] == [h.product_id for h in expected] == list("ebcda")
    assert got == expected
    assert [h.product_id for h in ranker.rank("q", hits, top_k=2)] == ["e", "b"]
