"""Indexing a catalog and searching it, on both backends, with a tiny model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
from qdrant_client import QdrantClient

from core.errors import ShopsearchError
from indexer.build import index_catalog
from retrieval.filters import Filters
from retrieval.retriever import Retriever
from retrieval.store import IndexLocation, open_backend

QUERIES = [
    "cordless drill kit",
    "kitchen faucet",
    "led light bulb",
    "interior paint",
    "garden shovel",
]


@pytest.fixture()
def edge_index(tmp_path, sample_catalog, tiny_encoder):
    loc = IndexLocation(path=tmp_path / "index")
    summary = index_catalog(
        sample_catalog, loc, encoder=tiny_encoder, progress=False, rejects_path=tmp_path / "rej.csv"
    )
    return loc, summary


def test_index_counts_and_manifest(edge_index, tiny_encoder):
    loc, summary = edge_index
    assert summary.indexed == summary.total == 300
    assert summary.rejected == 0 and summary.rejects_path is None
    col = open_backend(loc).open()
    try:
        assert col.count() == 300
        assert col.manifest["model"]["fingerprint"] == tiny_encoder.fingerprint
        assert col.manifest["model"]["dim"] == 32
        assert col.manifest["recipe"].startswith("title-brand-category")
        assert col.manifest["lexical"]["avg_doc_len"] > 3
    finally:
        col.close()


def test_reindex_same_file_is_idempotent(edge_index, sample_catalog, tiny_encoder):
    loc, _ = edge_index
    again = index_catalog(sample_catalog, loc, encoder=tiny_encoder, progress=False)
    assert again.total == 300
    up = index_catalog(sample_catalog, loc, mode="upsert", encoder=tiny_encoder, progress=False)
    assert (up.indexed, up.unchanged, up.total) == (0, 300, 300)


def test_upsert_reembeds_changed_only_and_sync_deletes(
    edge_index, sample_catalog, tiny_encoder, tmp_path
):
    loc, _ = edge_index
    frame = pl.read_parquet(sample_catalog)
    changed = frame.with_columns(
        pl.when(pl.int_range(pl.len()) < 3)
        .then(pl.col("title") + " Pro")
        .otherwise(pl.col("title"))
        .alias("title")
    ).head(290)
    path = tmp_path / "changed.parquet"
    changed.write_parquet(path)
    up = index_catalog(path, loc, mode="upsert", encoder=tiny_encoder, progress=False)
    assert (up.indexed, up.unchanged, up.deleted, up.total) == (3, 287, 0, 300)
    sync = index_catalog(path, loc, mode="sync", encoder=tiny_encoder, progress=False)
    assert (sync.indexed, sync.unchanged, sync.deleted, sync.total) == (0, 290, 10, 290)
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        first = changed["product_id"][0]
        hit = r.collection.retrieve([first])[first]
        assert hit.payload["title"].endswith(" Pro")
        gone = frame["product_id"][299]
        assert r.collection.retrieve([gone]) == {}


def test_failed_build_leaves_old_index_answering(
    edge_index, sample_catalog, tiny_encoder, monkeypatch
):
    loc, _ = edge_index
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        before = [h.product_id for h in r.search("cordless drill", k=10)]
    calls = {"n": 0}
    real = tiny_encoder.encode_document

    def flaky(texts, batch_size=None):
        calls["n"] += 1
        if calls["n"] > 0:
            raise RuntimeError("simulated crash mid-build")
        return real(texts, batch_size)

    monkeypatch.setattr(tiny_encoder, "encode_document", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        index_catalog(sample_catalog, loc, encoder=tiny_encoder, progress=False)
    monkeypatch.undo()
    assert not list((loc.path / "builds").glob("*.staging")), "staging version not cleaned up"
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        assert [h.product_id for h in r.search("cordless drill", k=10)] == before


def test_reader_keeps_answering_during_rebuild_and_refreshes(
    edge_index, sample_catalog, tiny_encoder
):
    loc, _ = edge_index
    r = Retriever.open(loc.path, encoder=tiny_encoder, auto_refresh_s=None)
    old_version = r.backend.current_version()
    index_catalog(sample_catalog, loc, encoder=tiny_encoder, progress=False)
    assert len(r.search("kitchen faucet", k=5)) == 5  # old version still open and answering
    assert r.refresh() is True
    assert r.backend.current_version() != old_version
    assert len(r.search("kitchen faucet", k=5)) == 5
    r.close()
    auto = Retriever.open(loc.path, encoder=tiny_encoder, auto_refresh_s=0.0)
    version = auto.backend.current_version()
    index_catalog(sample_catalog, loc, encoder=tiny_encoder, progress=False)
    auto.search("kitchen faucet", k=5)  # notices the new build by itself
    assert auto._version != version
    auto.close()
    builds = [p for p in (loc.path / "builds").iterdir()]
    assert len(builds) == 2, "current + one previous build are kept"


def test_no_valid_row_is_an_error_and_index_untouched(edge_index, tiny_encoder, tmp_path):
    loc, _ = edge_index
    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,title\n,no id\nX,\n")
    version = open_backend(loc).current_version()
    with pytest.raises(ShopsearchError, match="no valid product"):
        index_catalog(
            bad, loc, encoder=tiny_encoder, progress=False, rejects_path=tmp_path / "r.csv"
        )
    assert open_backend(loc).current_version() == version
    assert (tmp_path / "r.csv").read_text().count("\n") == 3


def test_rejects_file_names_line_and_reason(tmp_path, tiny_encoder):
    path = tmp_path / "cat.csv"
    path.write_text(
        "product_id,title,price\nA,Cordless drill,10\nA,Duplicate drill,11\nB,Faucet,-4\nC,Shovel,abc\nD,Paint,5\n"
    )
    loc = IndexLocation(path=tmp_path / "idx")
    summary = index_catalog(
        path, loc, encoder=tiny_encoder, progress=False, rejects_path=tmp_path / "rejects.csv"
    )
    assert (summary.indexed, summary.rejected) == (2, 3)
    rows = pl.read_csv(tmp_path / "rejects.csv")
    assert rows["line"].to_list() == [3, 4, 5]
    assert "duplicate" in rows["reason"][0]


def test_model_mismatch_is_refused(edge_index, tiny_model_b, sample_catalog):
    loc, _ = edge_index
    with pytest.raises(ShopsearchError, match="built with model"):
        Retriever.open(loc.path, model=tiny_model_b)
    from retrieval.encoder import BiEncoder

    with pytest.raises(ShopsearchError, match="same model"):
        index_catalog(
            sample_catalog, loc, mode="upsert", encoder=BiEncoder(tiny_model_b), progress=False
        )


def test_filters(edge_index, tiny_encoder, sample_products):
    loc, _ = edge_index
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        top = sample_products[0].category.split(" > ")[0]
        hits = r.search("tool", k=50, filters={"category": top})
        assert hits and all(h.payload["category"].startswith(top) for h in hits)
        leaf = sample_products[0].category
        hits = r.search("tool", k=50, filters=Filters(category=leaf))
        assert hits and all(h.payload["category"] == leaf for h in hits)
        brands = sorted({p.brand for p in sample_products if p.brand})[:2]
        hits = r.search("tool", k=50, filters={"brands": brands, "min_price": 20, "max_price": 200})
        assert hits and all(
            h.payload["brand"] in brands and 20 <= h.payload["price"] <= 200 for h in hits
        )
        expected_in = sum(1 for p in sample_products if p.in_stock)
        hits = r.search("tool", k=300, mode="dense", filters={"in_stock": True})
        assert len(hits) == expected_in and all(h.payload["in_stock"] is True for h in hits)
        hits = r.search("tool", k=300, mode="dense", filters={"in_stock": False})
        assert len(hits) == 300 - expected_in


def test_query_validation(edge_index, tiny_encoder):
    loc, _ = edge_index
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        with pytest.raises(ShopsearchError, match="empty"):
            r.search("   ")
        assert len(r.search("drill " * 5000, k=3)) == 3  # over-long: truncated, still answered
        assert r.search_batch([]) == []
        batch = r.search_batch(QUERIES, k=5, mode="dense")
        assert [len(b) for b in batch] == [5] * len(QUERIES)
        assert [h.product_id for h in batch[0]] == [
            h.product_id for h in r.search(QUERIES[0], k=5, mode="dense")
        ]
        with pytest.raises(ShopsearchError, match="k must be"):
            r.search("drill", k=0)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_edge_and_server_backends_agree(edge_index, tiny_encoder, sample_catalog, mode):
    loc, _ = edge_index
    client = QdrantClient(":memory:")
    server = IndexLocation(client=client)
    summary = index_catalog(sample_catalog, server, encoder=tiny_encoder, progress=False)
    assert summary.total == 300
    edge = Retriever.open(loc.path, encoder=tiny_encoder)
    remote = Retriever.open(client=client, encoder=tiny_encoder)
    for q in QUERIES:
        for flt in (None, {"in_stock": True, "max_price": 300}):
            a = edge.search(q, k=10, mode=mode, filters=flt)
            b = remote.search(q, k=10, mode=mode, filters=flt)
            assert [h.product_id for h in a] == [h.product_id for h in b], (q, flt)
            assert [round(h.score, 4) for h in a] == [round(h.score, 4) for h in b]
    edge.close()


def test_server_rebuild_switches_alias_and_drops_old(tiny_encoder, sample_catalog):
    client = QdrantClient(":memory:")
    loc = IndexLocation(client=client, collection="shop")
    for _ in range(3):
        index_catalog(sample_catalog, loc, encoder=tiny_encoder, progress=False)
    names = sorted(c.name for c in client.get_collections().collections)
    assert len(names) == 2 and all(n.startswith("shop__") for n in names)
    current = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}["shop"]
    assert current == names[-1]
    manifest = json.loads(client.get_collection(current).config.metadata["shopsearch"])
    assert manifest["count"] == 300


def test_location_requires_exactly_one(tmp_path):
    with pytest.raises(ShopsearchError, match="Only one of"):
        IndexLocation(path=tmp_path, url="http://localhost:6333")
    with pytest.raises(ShopsearchError, match="no index given"):
        IndexLocation()
    with pytest.raises(ShopsearchError, match="no shopsearch index"):
        Retriever.open(tmp_path / "nothing-here")


def test_copy_of_index_dir_is_searchable(edge_index, tiny_encoder, tmp_path):
    loc, _ = edge_index
    shutil.copytree(loc.path, tmp_path / "copy")
    with Retriever.open(tmp_path / "copy", encoder=tiny_encoder) as r:
        assert len(r.search("drill", k=3)) == 3


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_hits_can_carry_their_vectors_on_both_backends(
    edge_index, tiny_encoder, sample_catalog, mode
):
    loc, _ = edge_index
    client = QdrantClient(":memory:")
    index_catalog(
        sample_catalog, IndexLocation(client=client), encoder=tiny_encoder, progress=False
    )
    with Retriever.open(loc.path, encoder=tiny_encoder) as edge:
        hits = edge.search("kitchen faucet", k=5, mode=mode, with_vectors=True)
        assert all(h.vector is not None and h.vector.shape == (32,) for h in hits)
        assert "_vector" not in hits[0].payload
        stored = edge.collection.retrieve([hits[0].product_id], with_vectors=True)[
            hits[0].product_id
        ]
        np.testing.assert_allclose(hits[0].vector, stored.vector, rtol=1e-6)
        assert all(h.vector is None for h in edge.search("kitchen faucet", k=5, mode=mode))
    remote = Retriever.open(client=client, encoder=tiny_encoder)
    got = remote.search("kitchen faucet", k=5, mode=mode, with_vectors=True)
    assert all(h.vector is not None and h.vector.shape == (32,) for h in got)
