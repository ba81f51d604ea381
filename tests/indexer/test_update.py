"""Live price and stock (indexer/update.py): visible at once, checked whole, kept by indexing,
durable across kill -9, on both backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import polars as pl
import pytest
from qdrant_client import QdrantClient

from core.errors import ShopsearchError
from indexer.build import index_catalog
from indexer.update import (
    BadUpdate,
    UpdateQueue,
    apply_updates,
    read_updates,
    update_records,
)
from retrieval.filters import Filters
from retrieval.retriever import Retriever
from retrieval.store import IndexLocation, open_backend


@pytest.fixture(params=["edge", "server"])
def location(request, tmp_path, sample_catalog, tiny_encoder) -> IndexLocation:
    if request.param == "edge":
        loc = IndexLocation(path=tmp_path / "index")
    else:
        loc = IndexLocation(client=QdrantClient(":memory:"))
    index_catalog(sample_catalog, loc, encoder=tiny_encoder, progress=False)
    return loc


@pytest.fixture()
def edge_location(tmp_path, sample_catalog, tiny_encoder) -> IndexLocation:
    loc = IndexLocation(path=tmp_path / "index")
    index_catalog(sample_catalog, loc, encoder=tiny_encoder, progress=False)
    return loc


def _stored(loc: IndexLocation, ids: list[str]) -> dict[str, dict]:
    col = open_backend(loc).open()
    try:
        return {pid: dict(hit.payload) for pid, hit in col.retrieve(ids).items()}
    finally:
        col.close()


def _retriever(loc: IndexLocation, encoder) -> Retriever:
    return Retriever.open(
        loc.path, client=loc.client, encoder=encoder, auto_refresh_s=0.0, collection=loc.collection
    )


def test_update_is_seen_by_the_next_search_and_filter(location, tiny_encoder, sample_products):
    drill = next(p for p in sample_products if p.category and "Drills" in p.category)
    retriever = _retriever(location, tiny_encoder)
    try:
        before = retriever.search(drill.title, k=20, filters=Filters(in_stock=True))
        was_in_stock = drill.product_id in {h.product_id for h in before}
        summary = apply_updates(
            location,
            update_records([{"product_id": drill.product_id, "price": 1234.5, "in_stock": False}]),
        )
        assert summary.products == 1 and summary.fields == ("in_stock", "price")
        assert (summary.build_id is None) == (location.path is None)
        hits = retriever.search(drill.title, k=20, filters=Filters(in_stock=True))
        assert drill.product_id not in {h.product_id for h in hits}
        priced = retriever.search(drill.title, k=5, filters=Filters(min_price=1234, max_price=1235))
        assert [h.product_id for h in priced] == [drill.product_id]
        assert priced[0].payload["price"] == 1234.5 and priced[0].payload["in_stock"] is False
        assert retriever.collection.count(Filters(in_stock=False)) >= 1
        assert was_in_stock == bool(drill.in_stock)
        # vectors untouched: the product is still found by its title, at the same score
        unfiltered = {h.product_id: h.score for h in retriever.search(drill.title, k=5)}
        assert drill.product_id in unfiltered
    finally:
        retriever.close()


def test_a_bad_row_changes_nothing(location, sample_products, tmp_path):
    a, b = sample_products[0].product_id, sample_products[1].product_id
    before = _stored(location, [a, b])
    bad_rows = [
        ({"product_id": b, "price": -1}, "price", "negative"),
        ({"product_id": b, "price": float("nan")}, "price", "not a number"),
        ({"product_id": b, "price": "cheap"}, "price", "not a number"),
        ({"product_id": b, "in_stock": "maybe"}, "in_stock", "true/false"),
        ({"product_id": b, "in_stock": 2}, "in_stock", "true/false"),
        ({"product_id": "NO-SUCH-SKU", "price": 3}, "NO-SUCH-SKU", "not in the index"),
        ({"product_id": b, "title": "New title"}, "title", "shopsearch index"),
        ({"product_id": b, "brand": "Other"}, "brand", "searchable"),
        ({"product_id": b, "attributes.color": "red"}, "attributes.color", "searchable"),
        ({"product_id": b, "_hash": "x"}, "_hash", "store's own"),
        ({"product_id": a, "price": 5}, a, "give each product once"),
    ]
    for bad, names, says in bad_rows:
        with pytest.raises(BadUpdate) as err:
            apply_updates(location, update_records([{"product_id": a, "price": 1.0}, bad]))
        message = str(err.value)
        assert "\n" not in message and "row 2" in message, message
        assert names in message and says in message, message
    assert _stored(location, [a, b]) == before
    # an update file: the line is named; nothing of the good line before it is applied
    path = tmp_path / "prices.csv"
    path.write_text(f"product_id,price,in_stock\n{a},3.5,yes\n{b},-2,no\n")
    with pytest.raises(BadUpdate, match=r"prices.csv line 3 .*'price': negative price"):
        apply_updates(location, path)
    assert _stored(location, [a, b]) == before


def test_update_files_in_every_format(location, sample_products, tmp_path):
    ids = [p.product_id for p in sample_products[:3]]
    frame = pl.DataFrame(
        {"product_id": ids, "price": [1.5, None, 3.5], "in_stock": [True, False, None]}
    )
    for name, write in (
        ("u.csv", frame.write_csv),
        ("u.parquet", frame.write_parquet),
        ("u.jsonl", frame.write_ndjson),
    ):
        rows = read_updates(tmp_path / name) if write(tmp_path / name) is None else None
        assert [r.product_id for r in rows] == ids
        summary = apply_updates(location, tmp_path / name)
        assert summary.products == 3
        stored = _stored(location, ids)
        assert stored[ids[0]]["price"] == 1.5 and stored[ids[0]]["_in_stock"] == 1
        # a blank cell leaves the field alone
        assert stored[ids[1]]["price"] == sample_products[1].price
        assert stored[ids[1]]["in_stock"] is False and stored[ids[1]]["_in_stock"] == 0
        assert stored[ids[2]]["in_stock"] == sample_products[2].in_stock
    with pytest.raises(ShopsearchError, match="product_id"):
        pl.DataFrame({"sku": ids}).write_csv(tmp_path / "bad.csv")
        apply_updates(location, tmp_path / "bad.csv")


def test_other_fields_change_and_keep_their_type(tmp_path, sample_catalog, tiny_encoder):
    frame = pl.read_parquet(sample_catalog).with_columns(
        pl.lit(3.0).alias("rating"), pl.lit("none").alias("promo")
    )
    catalog = tmp_path / "extra.parquet"
    frame.write_parquet(catalog)
    loc = IndexLocation(path=tmp_path / "index")
    index_catalog(catalog, loc, encoder=tiny_encoder, progress=False)
    pid = frame["product_id"][4]
    apply_updates(loc, update_records([{"product_id": pid, "rating": 4.5, "promo": "sale"}]))
    stored = _stored(loc, [pid])[pid]
    assert stored["rating"] == 4.5 and stored["promo"] == "sale"


def test_unknown_or_repeated_columns_are_refused(location, sample_products, tmp_path):
    pid = sample_products[0].product_id
    before = _stored(location, [pid])
    with pytest.raises(BadUpdate) as err:
        apply_updates(location, update_records([{"product_id": pid, "colour": "red"}]))
    message = str(err.value)
    assert "\n" not in message and "row 1" in message, message
    assert "column 'colour' is not a field of this index: update price, in_stock" in message
    assert "nothing was updated" in message
    path = tmp_path / "typo.csv"
    path.write_text(f"product_id,price,colour\n{pid},3.5,red\n")
    with pytest.raises(BadUpdate, match=r"typo.csv line 2 .*column 'colour' is not a field"):
        apply_updates(location, path)
    twice = tmp_path / "twice.csv"
    twice.write_text(f"product_id,product_id\n{pid},{pid}\n")
    with pytest.raises(BadUpdate, match=r"twice.csv: column 'product_id' is given twice"):
        read_updates(twice)
    twice.write_text(f"product_id,price,price\n{pid},1,2\n")
    with pytest.raises(BadUpdate, match="column 'price' is given twice"):
        apply_updates(location, twice)
    with pytest.raises(BadUpdate, match="column 'price' is given twice"):
        update_records([{"product_id": pid, "price": 1, " price": 2}])
    assert _stored(location, [pid]) == before


def test_a_declared_attribute_field_is_updated_by_its_name(
    tmp_path, sample_catalog, sample_products, tiny_encoder
):
    from catalog.fields import SAMPLE_SCHEMA, FieldSchema

    loc = IndexLocation(path=tmp_path / "index")
    schema = FieldSchema.load(SAMPLE_SCHEMA)
    index_catalog(sample_catalog, loc, encoder=tiny_encoder, progress=False, schema=schema)
    tool = next(p for p in sample_products if "voltage" in p.attributes)
    pid, attributes = tool.product_id, dict(tool.attributes)
    path = tmp_path / "volts.csv"
    path.write_text(f"product_id,voltage\n{pid},37.5\n")
    summary = apply_updates(loc, path)
    assert summary.products == 1 and summary.fields == ("voltage",)
    stored = _stored(loc, [pid])[pid]
    assert "voltage" not in stored  # no stray top-level key
    assert stored["_f_voltage"] == 37.5
    assert stored["attributes"] == {**attributes, "voltage": "37.5"}  # the other keys kept
    col = open_backend(loc).open()
    try:
        assert col.count(Filters(where="voltage >= 37.4 AND voltage <= 37.6")) == 1
    finally:
        col.close()
    # a value that does not fit the type: one line naming the row and field, nothing applied
    path.write_text(f"product_id,voltage\n{pid},lots\n")
    with pytest.raises(BadUpdate) as err:
        apply_updates(loc, path)
    message = str(err.value)
    assert "\n" not in message and "volts.csv line 2" in message and "voltage" in message
    assert "nothing was updated" in message
    assert _stored(loc, [pid])[pid] == stored
    # a unit reads as indexing reads it; the other declared fields change the same way
    apply_updates(loc, update_records([{"product_id": pid, "voltage": "18 V", "color": "Red"}]))
    stored = _stored(loc, [pid])[pid]
    assert stored["_f_voltage"] == 18.0 and stored["attributes"]["voltage"] == "18 V"
    assert stored["_f_color"] == ["red"] and stored["attributes"]["color"] == "Red"
    assert "color" not in stored and "voltage" not in stored


def test_live_values_survive_upsert_and_sync(location, sample_catalog, tiny_encoder, tmp_path):
    frame = pl.read_parquet(sample_catalog)
    same, repriced, retitled = frame["product_id"][:3].to_list()
    apply_updates(
        location,
        update_records(
            [
                {"product_id": same, "price": 11.0, "in_stock": False},
                {"product_id": repriced, "price": 22.0},
                {"product_id": retitled, "price": 33.0},
            ]
        ),
    )
    # the catalog changes one product's price and another one's title (re-embedded)
    changed = frame.with_columns(
        pl.when(pl.col("product_id") == repriced)
        .then(pl.lit(999.0))
        .otherwise(pl.col("price"))
        .alias("price"),
        pl.when(pl.col("product_id") == retitled)
        .then(pl.col("title") + " Pro")
        .otherwise(pl.col("title"))
        .alias("title"),
    )
    path = tmp_path / "catalog2.parquet"
    changed.write_parquet(path)
    for mode in ("upsert", "sync"):
        summary = index_catalog(path, location, mode=mode, encoder=tiny_encoder, progress=False)
        assert summary.indexed == (2 if mode == "upsert" else 0)
        stored = _stored(location, [same, repriced, retitled])
        # unchanged row: untouched, live values kept
        assert stored[same]["price"] == 11.0 and stored[same]["_in_stock"] == 0
        # the catalog changed the price itself: the catalog wins
        assert stored[repriced]["price"] == 999.0 and "price" not in stored[repriced].get(
            "_live", {}
        )
        # the catalog changed the title only: re-embedded, the live price kept
        assert stored[retitled]["price"] == 33.0 and stored[retitled]["title"].endswith(" Pro")
    count = open_backend(location).open()
    try:
        assert count.count(Filters(min_price=32.5, max_price=33.5)) >= 1
    finally:
        count.close()


def test_an_updated_build_still_detects_damage(edge_location, sample_products):
    pid = sample_products[0].product_id
    summary = apply_updates(edge_location, update_records([{"product_id": pid, "price": 7.0}]))
    build = edge_location.path / "builds" / summary.build_id
    assert (edge_location.path / "CURRENT").read_text().strip() == summary.build_id
    open_backend(edge_location).open().close()  # the new build is sealed and opens cleanly
    target = max(
        (p for p in (build / "shard").rglob("*") if p.is_file() and p.name.endswith(".dat")),
        key=lambda p: p.stat().st_size,
    )
    with open(target, "r+b") as fh:
        fh.seek(target.stat().st_size // 2)
        fh.write(b"\x5a" * 64)
    with pytest.raises(ShopsearchError, match="damaged") as err:
        open_backend(edge_location).open()
    assert "\n" not in str(err.value)


def test_an_update_waits_for_then_refuses_a_busy_writer(edge_location, sample_products):
    backend = open_backend(edge_location)
    rows = update_records([{"product_id": sample_products[0].product_id, "price": 1.0}])
    with backend.writer_lock():
        started = time.monotonic()
        with pytest.raises(ShopsearchError, match="another shopsearch process"):
            apply_updates(edge_location, rows, wait_s=0.3)
        assert time.monotonic() - started >= 0.3


_KILLED = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from indexer.update import apply_updates, update_records
    from retrieval.store import IndexLocation

    loc = IndexLocation(path=Path(sys.argv[1]))
    ids = sys.argv[2].split(",")
    for n in range(1, 10_000):
        apply_updates(loc, update_records([{"product_id": p, "price": float(n)} for p in ids]))
        print(n, flush=True)
    """
)


@pytest.mark.parametrize("after_acks", [2, 5])
def test_kill_9_mid_update_loses_nothing_acknowledged(
    edge_location, sample_products, tmp_path, after_acks
):
    ids = [p.product_id for p in sample_products[:50]]
    script = tmp_path / "updater.py"
    script.write_text(_KILLED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(edge_location.path), ",".join(ids)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    acked = 0
    try:
        while acked < after_acks:
            line = proc.stdout.readline()
            assert line, "the updater died before it was killed"
            acked = int(line)
        time.sleep(0.05 * after_acks)  # somewhere inside the next update
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        rest = proc.stdout.read().split()
        acked = max([acked, *map(int, rest)])
    finally:
        if proc.poll() is None:
            proc.kill()
    col = open_backend(edge_location).open()  # verifies the seal: opens cleanly
    try:
        prices = {hit.payload["price"] for hit in col.retrieve(ids).values()}
        assert col.count() == 300
    finally:
        col.close()
    # every acknowledged update is there, and an update is all or nothing
    assert len(prices) == 1 and prices.pop() in (float(acked), float(acked + 1))
    # the next writer clears what the killed one left and goes on
    apply_updates(edge_location, update_records([{"product_id": ids[0], "price": 0.5}]))
    assert not list((edge_location.path / "builds").glob("*.staging"))
    builds = [p for p in (edge_location.path / "builds").iterdir() if p.is_dir()]
    assert len(builds) <= 2
    manifest = json.loads((builds[0] / "manifest.json").read_text())
    assert manifest["count"] == 300


def test_concurrent_submissions_share_a_build_and_fail_alone(edge_location, sample_products):
    queue = UpdateQueue()
    ids = [p.product_id for p in sample_products[:8]]
    results: dict[int, object] = {}

    def submit(i: int) -> None:
        price = -1.0 if i == 3 else 100.0 + i
        try:
            results[i] = queue.submit(
                edge_location, update_records([{"product_id": ids[i], "price": price}])
            )
        except BadUpdate as exc:
            results[i] = exc

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    with open_backend(edge_location).writer_lock():  # they all queue behind an indexing run
        for t in threads:
            t.start()
        time.sleep(0.5)
    for t in threads:
        t.join(60)
    assert isinstance(results[3], BadUpdate) and "negative price" in str(results[3])
    builds = {results[i].build_id for i in range(8) if i != 3}
    assert None not in builds and len(builds) <= 2  # one commit for the ones that waited
    stored = _stored(edge_location, ids)
    assert [stored[ids[i]]["price"] for i in range(8) if i != 3] == [
        100.0 + i for i in range(8) if i != 3
    ]
    assert stored[ids[3]]["price"] == sample_products[3].price


def test_sort_facets_and_declared_fields_read_updated_values(
    tmp_path, sample_catalog, tiny_encoder
):
    from catalog.fields import Field, FieldSchema
    from rerank.pipeline import SearchPipeline

    frame = pl.read_parquet(sample_catalog).with_columns(pl.lit(3.0).alias("rating"))
    catalog = tmp_path / "rated.parquet"
    frame.write_parquet(catalog)
    schema = FieldSchema.with_declared([Field("rating", "number", facetable=True)])
    loc = IndexLocation(path=tmp_path / "index")
    index_catalog(catalog, loc, encoder=tiny_encoder, progress=False, schema=schema)
    pipeline = SearchPipeline(_retriever(loc, tiny_encoder))
    try:
        query = "cordless drill"
        before = pipeline.search(query, k=10, sort="price:asc", facets=["in_stock", "rating"])
        last = before[-1]
        counts = {f.value: f.count for f in before.facets["in_stock"]}
        apply_updates(
            loc,
            update_records(
                [{"product_id": last.product_id, "price": 0.01, "in_stock": False, "rating": 5}]
            ),
        )
        after = pipeline.search(query, k=10, sort="price:asc", facets=["in_stock", "rating"])
        assert after[0].product_id == last.product_id  # sorted by its new price
        moved = {f.value: f.count for f in after.facets["in_stock"]}
        if last.payload.get("in_stock"):
            assert moved.get(False, 0) == counts.get(False, 0) + 1
        rated = pipeline.search(query, k=10, filter="rating >= 4")
        assert [h.product_id for h in rated] == [last.product_id]
        with pytest.raises(BadUpdate, match="rating"):
            apply_updates(loc, update_records([{"product_id": last.product_id, "rating": "lots"}]))
    finally:
        pipeline.retriever.close()


def test_a_searcher_switches_builds_in_the_background(edge_location, tiny_encoder, sample_products):
    pid = sample_products[0].product_id
    retriever = Retriever.open(edge_location.path, encoder=tiny_encoder, auto_refresh_s=0.05)
    try:
        summary = apply_updates(edge_location, update_records([{"product_id": pid, "price": 2.5}]))
        deadline = time.monotonic() + 30
        while retriever.manifest["build_id"] != summary.build_id:
            assert time.monotonic() < deadline, "the new build was never swapped in"
            retriever.search("drill", k=3)  # answered from the old build meanwhile
            time.sleep(0.05)
        assert retriever.payloads([pid])[pid]["price"] == 2.5
    finally:
        retriever.close()


def test_a_live_attribute_field_survives_upsert(tmp_path, sample_catalog, tiny_encoder):
    from catalog.fields import SAMPLE_SCHEMA, FieldSchema

    schema = FieldSchema.load(SAMPLE_SCHEMA)
    loc = IndexLocation(path=tmp_path / "index")
    index_catalog(sample_catalog, loc, encoder=tiny_encoder, progress=False, schema=schema)
    frame = pl.read_parquet(sample_catalog)
    volted = [r for r in frame.iter_rows(named=True) if '"voltage"' in (r["attributes"] or "")]
    retitled, revolted = volted[0]["product_id"], volted[1]["product_id"]
    apply_updates(
        loc,
        update_records(
            [{"product_id": retitled, "voltage": 37.5}, {"product_id": revolted, "voltage": 38}]
        ),
    )
    changed = frame.with_columns(
        pl.when(pl.col("product_id") == retitled)
        .then(pl.col("title") + " Pro")
        .otherwise(pl.col("title"))
        .alias("title"),
        pl.when(pl.col("product_id") == revolted)
        .then(pl.col("attributes").str.replace(r'"voltage": "[^"]*"', '"voltage": "99V"'))
        .otherwise(pl.col("attributes"))
        .alias("attributes"),
    )
    path = tmp_path / "catalog2.parquet"
    changed.write_parquet(path)
    index_catalog(path, loc, mode="upsert", encoder=tiny_encoder, progress=False, schema=schema)
    stored = _stored(loc, [retitled, revolted])
    # the catalog changed the title only: the live voltage is kept, display and filter key
    assert stored[retitled]["title"].endswith(" Pro")
    assert stored[retitled]["attributes"]["voltage"] == 37.5
    assert stored[retitled]["_f_voltage"] == 37.5
    # the catalog changed the voltage itself: the catalog wins
    assert stored[revolted]["attributes"]["voltage"] == "99V"
    assert stored[revolted]["_f_voltage"] == 99.0
