"""bench-fusion's rules and data sets on hand-worked lists (no index, no model)."""

from __future__ import annotations

import pytest

from research.bench_fusion import (
    RULES,
    as_run,
    combsum,
    dbsf,
    department,
    gap_share,
    list_gap,
    query_departments,
    query_types,
    rrf,
    sample_judgments,
    words_first,
)

DENSE = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
BM25 = [("c", 12.0), ("d", 6.0), ("a", 3.0)]


def test_weighted_rrf_by_hand():
    fused = rrf([DENSE, BM25], [1.0, 3.0])
    assert fused["a"] == pytest.approx(1 / 61 + 3 / 63)
    assert fused["c"] == pytest.approx(1 / 63 + 3 / 61)
    assert fused["d"] == pytest.approx(3 / 62)
    assert list(as_run(fused)) == ["c", "a", "d", "b"]


def test_combsum_and_combmnz_min_max():
    # dense: a 1, b 0.5, c 0; bm25: c 1, d 1/3, a 0
    s = combsum([DENSE, BM25])
    assert s == pytest.approx({"a": 1.0, "b": 0.5, "c": 1.0, "d": 1 / 3})
    m = combsum([DENSE, BM25], mnz=True)
    assert m == pytest.approx({"a": 2.0, "b": 0.5, "c": 2.0, "d": 1 / 3})


def test_dbsf_three_sigma():
    # dense scores 0.9, 0.8, 0.7: mean 0.8, sd sqrt(2/3)/10
    sd = (2 / 3) ** 0.5 / 10
    got = dbsf([DENSE])
    assert got["a"] == pytest.approx((0.9 - (0.8 - 3 * sd)) / (6 * sd))
    assert dbsf([[("x", 1.0), ("y", 1.0)]]) == {"x": 0.5, "y": 0.5}


def test_list_gap_is_scale_free_and_gap_share_weighs_the_steeper_list():
    flat = [(str(i), 1.0 - 0.01 * i) for i in range(20)]  # top 10 span 0.09 of 0.19
    steep = [(str(i), 100.0 if i == 0 else 10.0 - 0.1 * i) for i in range(20)]
    assert list_gap(flat) == pytest.approx(0.09 / 0.19)
    assert list_gap([(p, 7 * s + 3) for p, s in flat]) == pytest.approx(list_gap(flat))
    assert list_gap(steep) > list_gap(flat)
    assert gap_share(steep, flat) > 0.5 > gap_share(flat, steep)
    assert gap_share([], [("x", 1.0)]) == 0.5  # neither stands out


def test_every_rule_fuses_both_lists():
    for rule in RULES:
        fused = rule.fuse(DENSE, BM25, frozenset({"d"}))
        assert fused, rule.name
        if rule.name == "bm25 only":
            assert set(fused) == {"c", "d", "a"}
        if rule.name.startswith("words-first"):
            assert next(iter(as_run(fused))) == "d"  # the all-words product first


def test_offline_words_first_matches_the_retrievers():
    from retrieval.retriever import words_first as retriever_words_first
    from retrieval.store.base import stored_hit

    fused = rrf([DENSE, BM25], [0.5, 0.5])
    titles = {"a": "drill", "b": "saw", "c": "cordless drill", "d": "cordless drill kit"}
    hits = [stored_hit(p, fused[p], {"title": titles[p]}) for p in as_run(fused)]
    online = retriever_words_first(hits, frozenset({"cordless", "drill"}), str.split)
    offline = as_run(words_first(fused, frozenset({"c", "d"})))
    assert [h.product_id for h in online] == list(offline) == ["c", "d", "a", "b"]
    # a and c tie in RRF (a first by id); the bonus applies within the fused top depth only
    assert list(as_run(words_first(fused, frozenset({"c"}), depth=2))) == ["c", "a"]
    assert list(as_run(words_first(fused, frozenset({"b"}), depth=2))) == ["a", "c"]


def test_department_reads_the_head_noun_from_the_end():
    assert department("Delta Vero 1-Handle Shower Only Faucet Trim Kit") == "building & flooring"
    assert department("Delta Vero 1-Handle Faucet") == "plumbing & bath"
    assert department("Frobnicator 3000") is None
    titles = {"p1": "Brass Faucet", "p2": "Chrome Faucet", "p3": "LED Bulb", "p4": "Thing"}
    qrels = {"q1": {"p1": 3.0, "p2": 3.0, "p3": 3.0}, "q2": {"p4": 3.0, "p3": 1.0}}
    assert query_departments(qrels, titles, 2.5) == {"q1": "plumbing & bath", "q2": "other"}


def test_query_types():
    got = query_types({"a": "drill", "b": "2 in pvc elbow", "c": "cordless drill bits"})
    assert got["1-2 words"] == ["a"]
    assert got["4+ words"] == ["b"]
    assert got["with a digit"] == ["b"] and sorted(got["no digit"]) == ["a", "c"]


def test_sample_judgments_come_from_the_category_tree():
    from catalog.sample import generate_products

    products = generate_products(300)
    texts, qrels = sample_judgments(products)
    leaf = {p.product_id: p.category for p in products}
    for qid, judged in qrels.items():
        assert set(judged) <= set(leaf)
        if qid.startswith("leaf:"):
            (cat,) = {leaf[p] for p in judged}
            assert cat.split(" > ")[-1].lower() == texts[qid]
        if qid.startswith("attr:"):
            assert {3.0, 2.0} == set(judged.values())  # the value's products and the others


def test_fusion_latency_times_both_fusions_on_one_index(
    tmp_path, sample_catalog, tiny_encoder, monkeypatch
):
    """The latency part searches each query with both fusions and reports both and their
    difference (here on the tiny index, with a stand-in benchmark's queries)."""
    import polars as pl

    import research.bench_fusion as bench

    class Stub:
        def split(self, name):
            assert name == "test"
            return pl.DataFrame({"query": ["cordless drill", "drill", "saw blade"]}), {}

    from indexer.build import index_catalog
    from retrieval.store import IndexLocation

    index = tmp_path / "index"
    index_catalog(sample_catalog, IndexLocation(path=index), encoder=tiny_encoder, progress=False)
    monkeypatch.setattr(bench, "load_benchmark", lambda data: Stub())
    block = bench.fusion_latency("unused", index, n_queries=3, rounds=2, k=5)
    assert "3 Home Depot test queries x 2 rounds" in block
    for row in ("equal-weight RRF |", "words-first (the default) |", "difference, per query |"):
        assert row in block
