"""Sort (rerank.storefront): the relevant candidates by a field, relevance breaking ties,
products without a value last; the relevance floor keeps screws out of "drill" by price."""

from __future__ import annotations

import pytest

from catalog.fields import Field, FieldSchema
from core.errors import ShopsearchError
from rerank.storefront import SortSpec, relevant, sort_hits, sort_relevant
from retrieval.hits import RankedHit

SCHEMA = FieldSchema.with_declared(
    [Field("rating", "number", sortable=True), Field("created_at", "date", sortable=True)]
)


def _hit(pid: str, retrieval: float = 1.0, **payload) -> RankedHit:
    return RankedHit(pid, retrieval, retrieval, 1, payload={"title": pid, **payload})


def _ids(hits) -> list[str]:
    return [h.product_id for h in hits]


def test_ascending_and_descending_with_relevance_breaking_ties_and_missing_last() -> None:
    hits = [
        _hit("a", price=20.0),
        _hit("b"),  # no price
        _hit("c", price=10.0),
        _hit("d", price=20.0),
        _hit("e", price=None),
        _hit("f", price=5.0),
    ]
    price = SCHEMA.field("price")
    assert _ids(sort_hits(hits, price)) == ["f", "c", "a", "d", "b", "e"]
    assert _ids(sort_hits(hits, price, descending=True)) == ["a", "d", "c", "f", "b", "e"]


def test_dates_and_extra_columns_sort_too() -> None:
    hits = [
        _hit("old", created_at="2024-01-05"),
        _hit("new", created_at="2026-03-01T10:00:00Z"),
        _hit("bad", created_at="not a date"),  # does not fit: counts as no value
        _hit("mid", created_at="2025-06-30"),
    ]
    created = SCHEMA.field("created_at")
    assert _ids(sort_hits(hits, created, descending=True)) == ["new", "mid", "old", "bad"]


def test_relevance_floor_and_depth() -> None:
    hits = [_hit(f"p{i}", retrieval=s) for i, s in enumerate([1.0, 0.8, 0.5, 0.49, 0.9, 0.1])]
    assert _ids(relevant(hits, floor=0.5, depth=None)) == ["p0", "p1", "p2", "p4"]
    assert _ids(relevant(hits, floor=0.5, depth=3)) == ["p0", "p1", "p2"]
    assert _ids(relevant(hits, floor=0.0, depth=None)) == _ids(hits)
    # the floor is relative to the best of all candidates, not of those within the depth
    assert _ids(relevant(hits[1:], floor=0.9, depth=None)) == ["p4"]


def test_sort_spec_parsing_and_errors() -> None:
    assert SortSpec.parse("price:desc", SCHEMA) == SortSpec("price", True)
    assert SortSpec.parse("Price", SCHEMA) == SortSpec("price", False)
    assert SortSpec.parse("relevance", SCHEMA) is None
    assert SortSpec.parse(None, SCHEMA) is None
    with pytest.raises(ShopsearchError) as err:
        SortSpec.parse("brand:asc", SCHEMA)
    message = str(err.value)
    assert "\n" not in message and "sort 'brand'" in message
    assert "price, rating, created_at" in message
    with pytest.raises(ShopsearchError, match="asc or desc"):
        SortSpec.parse("price:up", SCHEMA)


def test_drill_by_price_starts_with_a_drill_not_the_cheapest_screw(storefront) -> None:
    everything = storefront.retriever.search("drill", k=300)
    screws = [h for h in everything if "Screws" in (h.payload.get("category") or "")]
    assert screws, "the fixture should retrieve screws for 'drill' (dense neighbours)"
    cheapest = min(screws, key=lambda h: h.payload["price"])
    # even with every product as a candidate, the floor keeps the screws out
    hits = storefront.search("drill", k=10, rerank_depth=300, sort="price:asc")
    assert hits and "Drills" in hits[0].payload["category"]
    assert cheapest.product_id not in _ids(hits)
    assert all("Screws" not in h.payload["category"] for h in hits)
    prices = [h.payload["price"] for h in hits]
    assert prices == sorted(prices)
    down = storefront.search("drill", k=10, rerank_depth=300, sort="price:desc")
    high = [h.payload["price"] for h in down]
    assert high == sorted(high, reverse=True) and high[0] >= prices[-1]
    # a sorted ranking is the relevant candidates: paging ends there
    assert hits.total_candidates == len(sort_relevant(everything, SCHEMA.field("price")))


def test_sort_on_a_field_that_is_not_sortable_is_refused(storefront) -> None:
    with pytest.raises(ShopsearchError, match="sortable fields: price"):
        storefront.search("drill", sort="brand:asc")


def test_a_sort_or_diversify_without_a_field_is_one_line_not_ignored() -> None:
    from catalog.fields import FieldSchema
    from rerank.storefront import DiversifySpec, SortSpec

    schema = FieldSchema.default()
    for text, spec in ((":asc", SortSpec), (" :desc", SortSpec), (":2", DiversifySpec)):
        with pytest.raises(ShopsearchError, match="give a field name") as err:
            spec.parse(text, schema)
        assert "\n" not in str(err.value)
    assert SortSpec.parse("", schema) is None and SortSpec.parse("relevance", schema) is None
    assert DiversifySpec.parse("off", schema) is None and DiversifySpec.parse(" ", schema) is None
