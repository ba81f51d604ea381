"""The store under bad input, crashes, concurrent writers, damaged files; secrets stay hidden."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import polars as pl
import pytest
from qdrant_client import QdrantClient

from core.errors import ShopsearchError
from indexer.build import index_catalog
from retrieval.retriever import Retriever
from retrieval.store import (
    IndexLocation,
    QuerySpec,
    open_backend,
    point_id,
    stored_hit,
)
from retrieval.store import edge as edge_mod
from retrieval.store import request as rq
from retrieval.store import server as server_mod
from retrieval.store.base import engine_errors

QUERIES = ["cordless drill kit", "kitchen faucet", "led light bulb", "garden shovel"]

SHOP_CSV = """product_id,title,brand,category,price,in_stock
H1,Black &amp; Decker cordless drill,Black &amp; Decker,Tools &amp; Hardware > Power Tools,59.0,true
H2,DeWalt cordless drill kit,DeWalt,Tools &amp; Hardware > Power Tools,99.0,true
H3,DEWALT  impact driver,DEWALT,tools & hardware > power tools,129.0,false
H4,Moen kitchen faucet,Moen,Plumbing > Faucets,229.0,false
H5,Philips led bulb,Philips,Electrical > Lighting,9.5,true
"""


@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory, sample_catalog):
    path = tmp_path_factory.mktemp("small") / "small.parquet"
    pl.read_parquet(sample_catalog).head(60).write_parquet(path)
    return path


def _index(catalog, loc, encoder, **kw):
    return index_catalog(catalog, loc, encoder=encoder, progress=False, **kw)


def _locations(tmp_path):
    return [IndexLocation(path=tmp_path / "idx"), IndexLocation(client=QdrantClient(":memory:"))]


# -- filters on a real index ------------------------------------------------------------------


def test_keyword_filters_match_however_spelled_on_both_backends(tmp_path, tiny_encoder):
    catalog = tmp_path / "shop.csv"
    catalog.write_text(SHOP_CSV)
    for loc in _locations(tmp_path):
        _index(catalog, loc, tiny_encoder, rejects_path=tmp_path / "rej.csv")
        r = Retriever.open(loc.path, client=loc.client, encoder=tiny_encoder)

        def ids(r=r, **flt):
            return sorted(h.product_id for h in r.search("drill", k=10, filters=flt))

        for spelling in ("DeWalt", "dewalt", "DEWALT", "  deWALT "):
            assert ids(brand=spelling) == ["H2", "H3"], spelling
        assert ids(brand="Black & Decker") == ids(brand="black &amp; decker") == ["H1"]
        assert ids(category="tools & hardware > POWER TOOLS") == ["H1", "H2", "H3"]
        assert ids(category="Tools &amp; Hardware") == ["H1", "H2", "H3"]
        assert ids(in_stock="false") == ids(in_stock="0") == ["H3", "H4"]
        assert ids(min_price="100") == ["H3", "H4"]
        hit = r.search("drill", k=1, filters={"brand": "dewalt"})[0]
        assert hit.payload["brand"] in ("DeWalt", "DEWALT")  # shown as the catalog spells it
        assert r.why_empty({"brand": "dewalt"}) is None
        assert r.search("drill", k=5, filters={"brand": "Bosch"}) == []
        assert r.why_empty({"brand": "Bosch"}) == "no product has brand 'Bosch'"
        assert r.why_empty({"brand": "Moen", "in_stock": True}) == (
            "no product meets all of: brand 'Moen', in stock"
        )
        r.close()


def test_nan_price_never_reaches_the_engine(tmp_path, small_catalog, tiny_encoder):
    loc = IndexLocation(path=tmp_path / "idx")
    _index(small_catalog, loc, tiny_encoder)
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        with pytest.raises(ShopsearchError, match="max_price"):
            r.search("drill", k=3, filters={"max_price": float("nan")})
        with pytest.raises(ValueError, match="NaN"):
            r.collection.search(QuerySpec(k=3, mode="dense", dense=np.full(32, np.nan)))


class PanicException(BaseException):
    """Stands in for pyo3_runtime.PanicException (a BaseException)."""


def test_engine_panic_becomes_a_one_line_error(tmp_path, small_catalog, tiny_encoder, monkeypatch):
    loc = IndexLocation(path=tmp_path / "idx")
    _index(small_catalog, loc, tiny_encoder)
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:

        def panic(*a, **k):
            raise PanicException("called `Option::unwrap()` on a `None` value\nbacktrace...")

        monkeypatch.setattr(r.collection, "shard", _Proxy(r.collection.shard, query=panic))
        with pytest.raises(RuntimeError, match=r"panicked during search.*unwrap\(\)`") as info:
            r.search("drill", k=3, mode="dense")
        assert "\n" not in str(info.value)
        monkeypatch.undo()
    with (
        pytest.raises(ShopsearchError, match="damaged"),
        engine_errors("open the index", "here", damaged=True),
    ):
        raise PanicException("bad segment")
    with pytest.raises(KeyboardInterrupt), engine_errors("search", "here"):
        raise KeyboardInterrupt


class _Proxy:
    def __init__(self, inner, **overrides):
        self._inner, self._overrides = inner, overrides

    def __getattr__(self, name):
        return self._overrides.get(name) or getattr(self._inner, name)


# -- deterministic hybrid ranking ---------------------------------------------------------------


def test_fusion_ignores_engine_tie_order():
    spec = QuerySpec(k=5, mode="hybrid", dense=np.ones(4), sparse=([1], [1.0]))
    dense = [stored_hit(f"p{i}", 0.5, {}) for i in range(12)]  # all tied
    sparse = [stored_hit(f"p{i}", 1.0 if i % 2 else 2.0, {}) for i in range(12)]
    results = set()
    for seed in range(6):
        order = random.Random(seed)
        a, b = dense[:], sparse[:]
        order.shuffle(a)
        order.shuffle(b)
        got = rq.search_batch(
            [spec],
            lambda reqs, a=a, b=b: [a, b],
            lambda ids, vec: {p: stored_hit(p, 0.0, {"product_id": p}) for p in ids},
        )[0]
        results.add(tuple((h.product_id, round(h.score, 12)) for h in got))
    assert len(results) == 1


def test_rebuilding_an_unchanged_catalog_gives_the_same_hybrid_ranking(
    tmp_path, sample_catalog, tiny_encoder
):
    loc = IndexLocation(path=tmp_path / "idx")
    runs = []
    for _ in range(2):
        _index(sample_catalog, loc, tiny_encoder)
        with Retriever.open(loc.path, encoder=tiny_encoder) as r:
            runs.append(
                [[(h.product_id, h.score) for h in r.search(q, k=10)] for q in QUERIES]
                + [
                    [(h.product_id, h.score) for h in r.search(q, k=10, filters={"in_stock": 1})]
                    for q in QUERIES
                ]
            )
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_a_build_in_segments_answers_like_one_segment(tmp_path, sample_catalog, tiny_encoder):
    """Indexing memory is bounded by a segment; the segments must not change any result."""
    results, segments = [], []
    for name, points in (("one", None), ("many", 70)):
        loc = IndexLocation(path=tmp_path / name)
        summary = _index(sample_catalog, loc, tiny_encoder, segment_points=points)
        backend = open_backend(loc)
        col = backend.open()
        segments.append(col.shard.info().segments_count)
        assert col.manifest["segment_points"] == (points or 50_000)
        col.close()
        with Retriever.open(loc.path, encoder=tiny_encoder) as r:
            results.append(
                [
                    [(h.product_id, h.score) for h in r.search(q, k=10, mode=mode)]
                    for q in QUERIES
                    for mode in ("dense", "bm25", "hybrid")
                ]
            )
        assert summary.total == 300
    assert segments[1] >= 300 // 70 > segments[0]  # 4 flushed segments (+ the last one)
    # the same products in the same order; scores equal but for float rounding (products are
    # embedded 70 at a time here, 300 there, so batches differ: ~1e-7 apart)
    assert [[p for p, _ in hits] for hits in results[0]] == [
        [p for p, _ in hits] for hits in results[1]
    ]
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-6)


def test_segment_size_must_be_positive(tmp_path, small_catalog, tiny_encoder):
    with pytest.raises(ShopsearchError, match="segment_points must be at least 1"):
        _index(small_catalog, IndexLocation(path=tmp_path / "idx"), tiny_encoder, segment_points=0)
    assert not (tmp_path / "idx").exists() or not list((tmp_path / "idx").rglob("CURRENT"))


# -- secrets --------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_secrets_are_redacted_everywhere():
    loc = IndexLocation(url="http://shop:s3cr3t-pw@127.0.0.1:9/", api_key="KEY-abc123")
    for text in (repr(loc), str(loc), loc.describe(), f"{loc!r}"):
        assert "s3cr3t-pw" not in text and "KEY-abc123" not in text, text
    assert "shop:***@127.0.0.1:9" in loc.describe()
    backend = open_backend(loc)
    with pytest.raises(ShopsearchError) as info:
        backend.current_version()  # nothing listens on port 9: the error names the location
    message = str(info.value)
    assert "s3cr3t-pw" not in message and "KEY-abc123" not in message
    assert (
        info.value.__cause__ is None
        and info.value.__context__ is None
        or ("s3cr3t-pw" not in repr(info.value.__context__))
    )
    assert loc.redact("GET http://shop:s3cr3t-pw@h/ key=KEY-abc123") == (
        "GET http://shop:***@h/ key=***"
    )


# -- crash leftovers (embedded) ----------------------------------------------------------------


@pytest.mark.parametrize("step", ["_seal", "_rename", "_write_current", "_drop_old"])
def test_crash_at_any_promotion_step_is_cleaned_up(
    tmp_path, small_catalog, tiny_encoder, monkeypatch, step
):
    loc = IndexLocation(path=tmp_path / "idx")
    backend = open_backend(loc)
    _index(small_catalog, loc, tiny_encoder)
    first = backend.current_version()
    reader = Retriever.open(loc.path, encoder=tiny_encoder, auto_refresh_s=None)

    def crash(*a, **k):
        raise RuntimeError(f"killed at {step}")

    monkeypatch.setattr(edge_mod.EdgeBackend, step, crash)
    with pytest.raises(RuntimeError, match="killed at"):
        _index(small_catalog, loc, tiny_encoder)
    monkeypatch.undo()
    # a killed process also leaves a staging folder behind (no `discard` runs)
    (loc.path / "builds" / "20000101T000000000000-dead00.staging").mkdir()
    live_before = backend.current_version()  # the crashed build when it got as far as CURRENT
    assert len(reader.search("drill", k=3)) == 3
    _index(small_catalog, loc, tiny_encoder)
    now = backend.current_version()
    builds = sorted(p.name for p in (loc.path / "builds").iterdir())
    assert builds == sorted({now, live_before}), "keeps the new build and the last live one"
    if live_before == first:
        assert len(reader.search("drill", k=3)) == 3  # the reader's build was kept
    reader.close()
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        assert len(r.search("drill", k=3)) == 3


def test_stale_staging_is_removed_by_the_next_writer_even_if_it_fails(
    tmp_path, small_catalog, tiny_encoder
):
    loc = IndexLocation(path=tmp_path / "idx")
    _index(small_catalog, loc, tiny_encoder)
    stale = loc.path / "builds" / "20000101T000000000000-dead00.staging"
    stale.mkdir()
    (stale / "junk").write_bytes(b"x" * 100)
    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,title\n,\n")
    with pytest.raises(ShopsearchError, match="no valid product"):
        _index(bad, loc, tiny_encoder, rejects_path=tmp_path / "r.csv")
    with open_backend(loc).writer_lock():
        pass
    assert not stale.exists()


# -- server: one writer at a time --------------------------------------------------------------


def test_server_has_a_single_writer(tiny_encoder, small_catalog):
    client = QdrantClient(":memory:")
    loc = IndexLocation(client=client, collection="shop")
    _index(small_catalog, loc, tiny_encoder)
    writer = open_backend(loc)
    with writer.writer_lock():
        manifest = {"build_id": "20990101T000000000000-aaaaaa", "model": {"dim": 32}}
        staging = writer.begin(manifest)
        with pytest.raises(ShopsearchError, match="another shopsearch process is writing"):
            _index(small_catalog, loc, tiny_encoder)
        assert client.collection_exists(staging.name)
        writer.discard(staging)
    _index(small_catalog, loc, tiny_encoder)  # the lock was released
    assert not client.collection_exists("shop__lock")


def test_server_never_deletes_a_build_in_progress(tiny_encoder, small_catalog):
    client = QdrantClient(":memory:")
    loc = IndexLocation(client=client, collection="shop")
    _index(small_catalog, loc, tiny_encoder)
    other = open_backend(loc)
    manifest = {"build_id": "20000101T000000000000-bbbbbb", "model": {"dim": 32}}
    in_progress = other.begin(manifest)  # e.g. a writer whose lock we cannot see
    for _ in range(3):
        _index(small_catalog, loc, tiny_encoder)
    assert client.collection_exists(in_progress.name)
    names = [c.name for c in client.get_collections().collections]
    assert len([n for n in names if n.startswith("shop__")]) == 3  # live, previous, in progress


def test_server_expired_lock_is_taken_over(tiny_encoder, small_catalog, monkeypatch):
    client = QdrantClient(":memory:")
    loc = IndexLocation(client=client, collection="shop")
    crashed = json.dumps({"owner": "dead", "expires": 1.0})
    client.create_collection(
        "shop__lock", vectors_config={}, metadata={server_mod._META_LOCK: crashed}
    )
    summary = _index(small_catalog, loc, tiny_encoder)
    assert summary.total == 60


def test_server_promotion_checks_the_alias_it_began_from(tiny_encoder, small_catalog):
    client = QdrantClient(":memory:")
    loc = IndexLocation(client=client, collection="shop")
    _index(small_catalog, loc, tiny_encoder)
    backend = open_backend(loc)
    with backend.writer_lock():
        staging = backend.begin({"build_id": "20990101T000000000000-cccccc", "model": {"dim": 32}})
        # someone swaps the alias behind our back (e.g. a writer that ignored the lock)
        other = open_backend(loc)
        sneaky = other.begin({"build_id": "20990101T000000000001-dddddd", "model": {"dim": 32}})
        other._owner = None
        other.promote(sneaky)
        with pytest.raises(ShopsearchError, match="another build"):
            backend.promote(staging)


# -- damage detection ---------------------------------------------------------------------------


def _largest_segment_file(root):
    files = [p for p in (root / "shard").rglob("*") if p.is_file() and not edge_mod._volatile(p)]
    return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate", "garble", "delete", "manifest"])
def test_damaged_edge_index_is_a_one_line_error(tmp_path, small_catalog, tiny_encoder, damage):
    loc = IndexLocation(path=tmp_path / "idx")
    _index(small_catalog, loc, tiny_encoder)
    root = loc.path / "builds" / open_backend(loc).current_version()
    target = _largest_segment_file(root)
    if damage == "truncate":
        os.truncate(target, target.stat().st_size // 2)
    elif damage == "garble":
        with open(target, "r+b") as fh:
            data = bytearray(fh.read())
            nonzero = [i for i, b in enumerate(data) if b][:64] or [0]
            for i in nonzero:
                data[i] ^= 0xFF
            fh.seek(0)
            fh.write(data)
    elif damage == "delete":
        target.unlink()
    else:
        target = root / "manifest.json"
        target.write_text(target.read_text().replace('"count"', '"cuont"'))
    with pytest.raises(ShopsearchError) as info:
        Retriever.open(loc.path, encoder=tiny_encoder)
    message = str(info.value)
    assert "\n" not in message and "re-index" in message and target.name in message
    _index(small_catalog, loc, tiny_encoder)  # what the message says to do repairs it
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        assert len(r.search("drill", k=3)) == 3


def test_current_naming_a_missing_build_is_reported_and_repaired(
    tmp_path, small_catalog, tiny_encoder
):
    loc = IndexLocation(path=tmp_path / "idx")
    _index(small_catalog, loc, tiny_encoder)
    (loc.path / "CURRENT").write_text("20000101T000000000000-gone00\n")
    with pytest.raises(ShopsearchError, match="CURRENT names build.*missing.*re-index"):
        Retriever.open(loc.path, encoder=tiny_encoder)
    _index(small_catalog, loc, tiny_encoder)
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        assert len(r.search("drill", k=3)) == 3


def test_damaged_server_index_is_an_error(tiny_encoder, small_catalog, sample_products):
    client = QdrantClient(":memory:")
    loc = IndexLocation(client=client, collection="shop")
    _index(small_catalog, loc, tiny_encoder)
    live = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}["shop"]
    from qdrant_client import models

    client.delete(
        live,
        points_selector=models.PointIdsList(points=[point_id(sample_products[0].product_id)]),
    )
    with pytest.raises(ShopsearchError, match="damaged.*59 products, 60 were indexed"):
        Retriever.open(client=client, collection="shop", encoder=tiny_encoder)


# -- disk ------------------------------------------------------------------------------------------


def test_sparse_copy_keeps_holes(tmp_path):
    src = tmp_path / "src.dat"
    with open(src, "wb") as fh:
        fh.write(b"head")
        fh.seek(64 << 20)
        fh.write(b"tail")
    dst = tmp_path / "dst.dat"
    edge_mod.sparse_copy(str(src), str(dst))
    assert dst.read_bytes()[:4] == b"head" and dst.stat().st_size == src.stat().st_size
    assert dst.stat().st_blocks * 512 < 4 << 20
    assert edge_mod._digest(src) == edge_mod._digest(dst)


def test_non_finite_values_are_refused_before_the_engine():
    from retrieval.store import PointRecord

    with pytest.raises(ValueError, match=r"payload field attributes.rating is NaN"):
        PointRecord("p1", np.ones(4), None, {"attributes": {"rating": float("nan")}})
    with pytest.raises(ValueError, match="NaN"):
        PointRecord("p1", np.array([1.0, np.inf, 0, 0]), None, {})
    with pytest.raises(ValueError, match="negative index"):
        PointRecord("p1", np.ones(4), ([-1], [1.0]), {})
