"""The built-in hybrid fusion (equal-weight RRF, all-words products first) and the tuning an
index records, which wins over it."""

from __future__ import annotations

import pytest

from core.errors import ShopsearchError
from indexer.build import index_catalog, tune_index
from retrieval.lexical import LexicalEncoder
from retrieval.retriever import (
    DEFAULT_DENSE_WEIGHT,
    DEFAULT_SPARSE_WEIGHT,
    QueryTuning,
    Retriever,
    query_words,
    words_first,
)
from retrieval.store import IndexLocation
from retrieval.store.base import stored_hit


def _hits(*rows: tuple[str, float, str]):
    return [stored_hit(pid, score, {"title": title}) for pid, score, title in rows]


def _split(text: str) -> list[str]:
    return text.lower().split()


def test_words_first_by_hand():
    # RRF order a, b, c, d; c and d hold both words, a and b one
    hits = _hits(
        ("a", 0.030, "red drill"),
        ("b", 0.029, "cordless saw"),
        ("c", 0.020, "cordless drill kit"),
        ("d", 0.010, "drill cordless"),
    )
    got = words_first(hits, frozenset({"cordless", "drill"}), _split)
    assert [h.product_id for h in got] == ["c", "d", "a", "b"]  # each group in RRF order
    assert [h.score for h in got] == pytest.approx([1.020, 1.010, 0.030, 0.029])
    assert all(h.retrieval == h.score for h in got)
    scores = [h.score for h in got]
    assert scores == sorted(scores, reverse=True)  # scores still fall with rank


def test_words_first_leaves_the_fused_order_when_it_has_no_evidence():
    hits = _hits(("a", 0.03, "red drill"), ("b", 0.02, "blue drill"))
    for words in (frozenset(), frozenset({"saw"}), frozenset({"drill"})):  # none, none, all
        assert words_first(hits, words, _split) == hits


def test_query_words_are_bm25_tokens_less_stop_words():
    lexical = LexicalEncoder()
    words = query_words(lexical.tokenize, "drill for the 20 volt battery")
    assert words == frozenset(lexical.tokenize("drill 20 volt battery"))
    assert words == query_words(lexical.tokenize, "20v drill batteries")


def test_default_tuning_for_an_index_that_records_none():
    t = QueryTuning.from_manifest({})
    assert (t.dense_weight, t.sparse_weight) == (1.0, 1.0)  # equal weights
    assert (DEFAULT_DENSE_WEIGHT, DEFAULT_SPARSE_WEIGHT) == (1.0, 1.0)
    assert t.fusion == "words-first" and t == QueryTuning()


def test_recorded_weights_win_and_an_old_manifest_keeps_plain_rrf():
    old = QueryTuning.from_manifest({"query": {"dense_weight": 0.1, "sparse_weight": 1.0}})
    assert (old.dense_weight, old.fusion) == (0.1, "rrf")  # as it was fused when recorded
    tuned = QueryTuning(dense_weight=0.3, how="validation", fusion="words-first")
    again = QueryTuning.from_manifest({"query": tuned.as_dict()})
    assert again == tuned
    with pytest.raises(ShopsearchError, match="fusion"):
        QueryTuning(fusion="combsum")  # type: ignore[arg-type]


def test_retriever_uses_the_default_then_the_recorded_tuning(
    sample_catalog, tiny_encoder, tmp_path
):
    loc = IndexLocation(path=tmp_path / "index")
    index_catalog(sample_catalog, loc, encoder=tiny_encoder, progress=False)
    queries = ["cordless drill", "kitchen faucet", "interior paint", "garden shovel"]
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        assert r.tuning == QueryTuning()
        tokenize = r.lexical.tokenize
        for q in queries:
            hits = r.search(q, k=10)
            words = query_words(tokenize, q)
            full = [words <= set(tokenize(h.title + " " + (h.payload.get("description") or "")))
                    or h.score >= 1 for h in hits]  # fmt: skip
            # all-words products (score + 1) come first, then the rest in RRF order
            assert full == sorted(full, reverse=True)
            assert [h.retrieval_rank for h in hits] == list(range(1, len(hits) + 1))
            assert len(hits) == 10
        default = {q: [h.product_id for h in r.search(q, k=10)] for q in queries}
    tune_index(loc, QueryTuning(dense_weight=0.0, sparse_weight=1.0, how="test", fusion="rrf"))
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        assert (r.tuning.dense_weight, r.tuning.fusion) == (0.0, "rrf")
        for q in queries:  # the recorded weight wins: dense 0 leaves BM25's order
            assert [h.product_id for h in r.search(q, k=10)] == [
                h.product_id for h in r.search(q, k=10, mode="bm25")
            ]
        assert any([h.product_id for h in r.search(q, k=10)] != default[q] for q in queries)
