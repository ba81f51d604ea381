"""Tests for catalog.sample: determinism, category tree, realism of the synthetic catalog."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from catalog.reader import CatalogError, read_catalog
from catalog.sample import (
    LEAF_CATEGORIES,
    SAMPLE_QUERIES,
    generate_products,
    write_sample_catalog,
)
from catalog.text import product_text


@pytest.fixture(scope="module")
def products():
    return generate_products(3000, seed=0)


def test_deterministic_for_n_and_seed() -> None:
    assert generate_products(200, seed=3) == generate_products(200, seed=3)
    assert generate_products(200, seed=3) != generate_products(200, seed=4)
    assert generate_products(100, seed=3) == generate_products(200, seed=3)[:100]
    assert generate_products(0) == []


def test_ids(products) -> None:
    assert products[0].product_id == "SKU-000001"
    assert products[-1].product_id == "SKU-003000"
    assert len({p.product_id for p in products}) == len(products)


def test_category_hierarchy() -> None:
    assert len(LEAF_CATEGORIES) >= 25
    assert len(set(LEAF_CATEGORIES)) == len(LEAF_CATEGORIES)
    for leaf in LEAF_CATEGORIES:
        parts = leaf.split(" > ")
        assert len(parts) == 3 and all(parts), leaf
    departments = {leaf.split(" > ")[0] for leaf in LEAF_CATEGORIES}
    assert {"Tools", "Outdoors", "Lighting", "Plumbing", "Paint", "Flooring"} <= departments
    assert {"Electrical", "Appliances"} <= departments
    assert "Tools > Power Tools > Drills" in LEAF_CATEGORIES


def test_every_leaf_is_used(products) -> None:
    counts = Counter(p.category for p in products)
    assert set(counts) == set(LEAF_CATEGORIES)
    assert min(counts.values()) > 20


def test_prices_stock_and_text(products) -> None:
    for p in products:
        assert p.price is not None and p.price > 0
        assert f"{p.price:.2f}".endswith((".97", ".99")), p.price
        assert p.brand and p.title.startswith(p.brand)
        assert "{" not in p.title and "  " not in p.title
        assert p.description and p.description.endswith(".")
        assert p.extra == {}
    share = sum(p.in_stock for p in products) / len(products)
    assert 0.8 < share < 0.9
    fridges = [p.price for p in products if "Refrigerators" in (p.category or "")]
    bulbs = [p.price for p in products if "Light Bulbs" in (p.category or "")]
    assert min(fridges) > max(bulbs)


def test_attributes_fit_the_category(products) -> None:
    def attrs_of(leaf: str) -> list[dict]:
        return [p.attributes for p in products if p.category == leaf]

    for a in attrs_of("Tools > Power Tools > Drills"):
        assert {"voltage", "power_source", "chuck_size"} <= set(a)
    for a in attrs_of("Paint > Interior Paint > Wall Paint"):
        assert {"color", "finish", "size"} <= set(a)
        assert a["size"].endswith(("gal.", "qt."))
    for a in attrs_of("Plumbing > Faucets > Kitchen Faucets"):
        assert {"finish", "material"} <= set(a)
    for p in products:
        assert all(isinstance(v, str) and v for v in p.attributes.values())
        assert not any(k.endswith(("_lower", "_label")) for k in p.attributes)


def test_drill_title_looks_real(products) -> None:
    drills = [p.title for p in products if p.category == "Tools > Power Tools > Drills"]
    assert any(re.search(r"\d+V MAX Cordless .*Drill/Driver", t) for t in drills)
    assert all("Drill" in t for t in drills)


def test_product_text_uses_key_attributes(products) -> None:
    paint = next(p for p in products if p.category == "Paint > Interior Paint > Wall Paint")
    text = product_text(paint)
    assert "color: " in text and "finish: " in text


def test_sample_queries_match_products(products) -> None:
    assert 8 <= len(SAMPLE_QUERIES) <= 15
    docs = [set(re.findall(r"[a-z0-9]+", f"{p.title} {p.category}".lower())) for p in products]
    stop = {"for", "with", "in", "the", "a"}
    for query in SAMPLE_QUERIES:
        terms = set(re.findall(r"[a-z0-9]+", query.lower())) - stop
        best = max(len(terms & d) / len(terms) for d in docs)
        assert best >= 0.75, query


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_write_sample_catalog(tmp_path: Path, ext: str) -> None:
    path = write_sample_catalog(tmp_path / "nested" / f"sample.{ext}", n=50, seed=1)
    assert path == tmp_path / "nested" / f"sample.{ext}" and path.is_file()
    products = [p for b in read_catalog(path) for p in b.products]
    assert products == generate_products(50, seed=1)


def test_jsonl_attributes_are_objects_and_csv_attributes_strings(tmp_path: Path) -> None:
    jsonl = write_sample_catalog(tmp_path / "s.jsonl", n=5)
    first = json.loads(jsonl.read_text(encoding="utf-8").splitlines()[0])
    assert isinstance(first["attributes"], dict)
    csv_text = write_sample_catalog(tmp_path / "s.csv", n=5).read_text(encoding="utf-8")
    assert csv_text.splitlines()[0].endswith(",attributes")
    assert '"{""' in csv_text


def test_write_sample_catalog_rejects_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(CatalogError):
        write_sample_catalog(tmp_path / "sample.xlsx", n=5)
    assert not (tmp_path / "sample.xlsx").exists()


def test_generation_is_fast() -> None:
    start = time.perf_counter()
    generate_products(20_000, seed=5)
    assert time.perf_counter() - start < 5.0
