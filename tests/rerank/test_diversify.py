"""Diversity (a per-group cap in rounds) and paging with offset through SearchPipeline.search."""

from __future__ import annotations

from collections import Counter

import pytest

from catalog.fields import FieldSchema
from core.errors import ShopsearchError
from rerank.storefront import DiversifySpec, diversify, group_by_field
from retrieval.hits import RankedHit

SCHEMA = FieldSchema.default()


def _hit(pid: str, brand: str | None) -> RankedHit:
    payload = {"title": pid} if brand is None else {"title": pid, "brand": brand}
    return RankedHit(pid, 1.0, 1.0, 1, payload=payload)


def _ids(hits) -> list[str]:
    return [h.product_id for h in hits]


def test_cap_in_rounds_keeps_relevance_order_within_each_round() -> None:
    hits = [
        _hit("a1", "A"),
        _hit("a2", "a"),  # same brand, spelled otherwise
        _hit("a3", "A"),
        _hit("a4", "A"),
        _hit("b1", "B"),
        _hit("x", None),  # no brand: a group of its own
        _hit("b2", "B"),
        _hit("b3", "B"),
        _hit("c1", "C"),
    ]
    group = group_by_field(SCHEMA.field("brand"))
    assert _ids(diversify(hits, group, 1)) == ["a1", "b1", "x", "c1", "a2", "b2", "a3", "b3", "a4"]
    assert _ids(diversify(hits, group, 2)) == ["a1", "a2", "b1", "x", "b2", "c1", "a3", "a4", "b3"]
    assert _ids(diversify(hits, group, 9)) == _ids(hits)
    assert sorted(_ids(diversify(hits, group, 1))) == sorted(_ids(hits))  # nothing lost
    with pytest.raises(ValueError):
        diversify(hits, group, 0)


def test_spec_parsing_and_errors() -> None:
    assert DiversifySpec.parse("brand:3", SCHEMA) == DiversifySpec("brand", 3)
    assert DiversifySpec.parse("Brand", SCHEMA) == DiversifySpec("brand", 2)
    assert DiversifySpec.parse("off", SCHEMA) is None
    with pytest.raises(ShopsearchError, match="N >= 1"):
        DiversifySpec.parse("brand:0", SCHEMA)
    with pytest.raises(ShopsearchError) as err:
        DiversifySpec.parse("title:2", SCHEMA)
    assert "\n" not in str(err.value) and "brand, category, price, in_stock" in str(err.value)


def test_first_page_holds_at_most_the_cap_per_brand(storefront) -> None:
    plain = storefront.search("drill", k=10)
    capped = storefront.search("drill", k=10, diversify="brand:1")
    per_brand = Counter(h.payload["brand"] for h in capped)
    assert max(per_brand.values()) == 1
    assert max(Counter(h.payload["brand"] for h in plain).values()) > 1  # it did something
    assert capped[0].product_id == plain[0].product_id  # the best stays first


def test_paging_with_offset_walks_one_ranking(storefront) -> None:
    for options in ({}, {"diversify": "brand:1"}, {"sort": "price:asc"}):
        whole = storefront.search("paint", k=30, **options)
        pages = [storefront.search("paint", k=10, offset=o, **options) for o in (0, 10, 20)]
        assert _ids([h for page in pages for h in page]) == _ids(whole)
        assert all(p.total_candidates == whole.total_candidates for p in pages)
    past = storefront.search("paint", k=10, offset=990)
    assert list(past) == [] and past.total_candidates > 0  # beyond the candidates: empty
    with pytest.raises(ShopsearchError, match="offset"):
        storefront.search("paint", offset=-1)
