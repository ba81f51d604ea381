"""Exact search through the store facade: the reference that HNSW is measured against."""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import QdrantClient

import retrieval.store as store_tunables
import retrieval.store.edge as edge_store
from indexer.build import index_catalog
from retrieval.retriever import Retriever
from retrieval.store import (
    EdgeBackend,
    IndexLocation,
    PointRecord,
    QuerySpec,
    new_build_id,
    payload_for,
)
from retrieval.store import request as rq
from retrieval.store import server as server_store

QUERIES = ["cordless drill kit", "kitchen faucet", "led light bulb", "interior paint"]
FILTER = {"in_stock": True, "max_price": 300}


def test_exact_reaches_both_engines_for_dense_sources_only():
    spec = QuerySpec(
        k=5,
        mode="hybrid",
        dense=np.ones(4),
        sparse=([1], [1.0]),
        extra_dense=((np.ones(4), 0.5),),
        exact=True,
    )
    reqs = rq.plan(spec)
    assert [(r.using, r.exact) for r in reqs] == [("dense", True), ("bm25", False), ("dense", True)]
    for build in (edge_store._request, server_store._request):
        dense, sparse = build(reqs[0]).params, build(reqs[1]).params
        # exact: no HNSW, and the fp32 vectors rather than an int8 copy
        assert dense.exact is True and dense.quantization.ignore is True
        assert sparse.exact is False and sparse.quantization.ignore is False
    approx = rq.plan(QuerySpec(k=5, dense=np.ones(4)))[0]
    assert approx.exact is False
    assert edge_store._request(approx).params.exact is False


def _all_vectors(retriever: Retriever) -> tuple[list[str], np.ndarray, dict[str, dict]]:
    ids = [p["product_id"] for p in retriever.collection.scroll_payloads(["product_id"], batch=128)]
    got = retriever.collection.retrieve(ids, with_vectors=True)
    ids = sorted(got)
    return ids, np.stack([got[p].vector for p in ids]), {p: got[p].payload for p in ids}


def _assert_brute_force_top_k(hits, ids, vectors, query_vec, k, eligible=None) -> None:
    """Hits are the exact cosine top k (ties at the cut, within float noise, either way)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit @ (query_vec / np.linalg.norm(query_vec))
    by_id = dict(zip(ids, scores.tolist(), strict=True))
    pool = [p for p in ids if eligible is None or eligible(p)]
    best = sorted((by_id[p] for p in pool), reverse=True)[:k]
    assert len(hits) == len(best)
    np.testing.assert_allclose([h.score for h in hits], best, atol=1e-5)
    for h in hits:
        assert by_id[h.product_id] == pytest.approx(h.score, abs=1e-5)
    cut = best[-1]
    must = {p for p in pool if by_id[p] > cut + 1e-5}
    assert must <= {h.product_id for h in hits}


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_exact_is_brute_force_and_the_same_on_both_backends(
    tmp_path, sample_catalog, tiny_encoder, quantize
):
    edge = IndexLocation(path=tmp_path / "edge")
    client = QdrantClient(":memory:")
    for loc in (edge, IndexLocation(client=client)):
        index_catalog(
            sample_catalog, loc, encoder=tiny_encoder, quantize_vectors=quantize, progress=False
        )
    with (
        Retriever.open(edge.path, encoder=tiny_encoder) as a,
        Retriever.open(client=client, encoder=tiny_encoder) as b,
    ):
        ids, vectors, payloads = _all_vectors(a)
        in_filter = lambda p: bool(payloads[p].get("in_stock")) and payloads[p]["price"] <= 300  # noqa: E731
        for q in QUERIES:
            qvec = tiny_encoder.encode_query([q])[0]
            for flt in (None, FILTER):
                ea = a.search(q, k=50, mode="dense", filters=flt, exact=True, correct=False)
                eb = b.search(q, k=50, mode="dense", filters=flt, exact=True, correct=False)
                assert [h.product_id for h in ea] == [h.product_id for h in eb], (q, flt)
                _assert_brute_force_top_k(
                    ea, ids, vectors, qvec, 50, None if flt is None else in_filter
                )
                ha = a.search(q, k=20, mode="hybrid", filters=flt, exact=True)
                hb = b.search(q, k=20, mode="hybrid", filters=flt, exact=True)
                assert [h.product_id for h in ha] == [h.product_id for h in hb], (q, flt)
        batch = a.search_batch(QUERIES, k=10, mode="dense", exact=True, correct=False)
        assert [[h.product_id for h in hits] for hits in batch] == [
            [h.product_id for h in a.search(q, k=10, mode="dense", exact=True, correct=False)]
            for q in QUERIES
        ]


def test_exact_scans_where_hnsw_approximates(tmp_path, monkeypatch):
    """On a segment big enough for its HNSW graph, exact search still finds the true top 100."""
    # a graph for any segment, searched with the narrowest beam (ef = the prefetch depth, 100)
    monkeypatch.setattr(edge_store, "HNSW_FULL_SCAN_KB", 1)
    monkeypatch.setattr(store_tunables, "HNSW_EF_SEARCH", 1)
    n, dim = 2000, 64
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"p{i:05d}" for i in range(n)]
    backend = EdgeBackend(IndexLocation(path=tmp_path / "random"))
    col = backend.begin({"build_id": new_build_id(), "model": {"dim": dim}})
    col.upsert(
        [
            PointRecord(p, vectors[i], None, payload_for({"product_id": p}, "h", []))
            for i, p in enumerate(ids)
        ]
    )
    col.finalize()
    try:
        hnsw_recall = []
        for q in rng.standard_normal((20, dim)).astype(np.float32):
            truth = {ids[i] for i in np.argsort(-(vectors @ q))[:100]}
            exact = col.search(QuerySpec(k=100, dense=q, exact=True))
            _assert_brute_force_top_k(exact, ids, vectors, q, 100)
            approx = col.search(QuerySpec(k=100, dense=q))
            hnsw_recall.append(len(truth & {h.product_id for h in approx}) / 100)
        # the graph was searched (not scanned): else this test proves nothing about exact=True
        assert np.mean(hnsw_recall) < 1.0
    finally:
        backend.discard(col)
