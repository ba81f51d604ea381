"""Facets (rerank.storefront): counts over the candidates, checked against a polars oracle over
the same candidate set, plain and disjunctive; bands of number fields; errors."""

from __future__ import annotations

import polars as pl
import pytest

from catalog.fields import Field, FieldSchema
from core.errors import ShopsearchError
from rerank.defaults import DEFAULT_RERANK_DEPTH
from rerank.storefront import FacetSpec, default_cuts, facet_counts, facets, parse_facets
from retrieval.filters import Filters
from retrieval.hits import RankedHit

SCHEMA = FieldSchema.with_declared(
    [
        Field("voltage", "number", source="attributes.voltage", unit="V", facetable=True),
        Field("color", "keyword", facetable=True),
    ]
)


def _hit(i: int, **payload) -> RankedHit:
    return RankedHit(f"p{i}", 1.0 / i, 1.0 / i, i, payload={"title": f"t{i}", **payload})


def _counts(values) -> dict:
    return {c.label: c.count for c in values}


def test_keyword_counts_fold_spellings_and_keep_the_most_frequent_label() -> None:
    hits = [
        _hit(1, brand="DeWalt"),
        _hit(2, brand="DEWALT "),
        _hit(3, brand="DeWalt"),
        _hit(4, brand="Makita"),
        _hit(5),  # no brand: not counted
    ]
    got = facet_counts(hits, SCHEMA.field("brand"), FacetSpec("brand"))
    assert [(c.value, c.label, c.count) for c in got] == [
        ("dewalt", "DeWalt", 3),
        ("makita", "Makita", 1),
    ]
    assert got[0].filter == 'brand = "DeWalt"'


def test_limit_keeps_the_most_frequent_values() -> None:
    hits = [_hit(i, brand=b) for i, b in enumerate("aaabbc", start=1)]
    got = facet_counts(hits, SCHEMA.field("brand"), FacetSpec.parse("brand:2"))
    assert _counts(got) == {"a": 3, "b": 2}


def test_category_bool_and_list_values() -> None:
    hits = [
        _hit(1, category="Tools > Drills", in_stock=True, color=["Red", "Black"]),
        _hit(2, category="tools >  drills", in_stock=False, color="red"),
        _hit(3, category="Tools > Saws", in_stock=True),
    ]
    assert _counts(facet_counts(hits, SCHEMA.field("category"), FacetSpec("category"))) == {
        "Tools > Drills": 2,
        "Tools > Saws": 1,
    }
    stock = facet_counts(hits, SCHEMA.field("in_stock"), FacetSpec("in_stock"))
    assert [(c.value, c.count, c.filter) for c in stock] == [
        (True, 2, "in_stock = true"),
        (False, 1, "in_stock = false"),
    ]
    assert _counts(facet_counts(hits, SCHEMA.field("color"), FacetSpec("color"))) == {
        "Red": 2,
        "Black": 1,
    }


def test_number_bands_from_the_request() -> None:
    prices = [5.0, 24.99, 25.0, 49.0, 120.0, None]
    hits = [_hit(i, price=p) for i, p in enumerate(prices, start=1)]
    got = facet_counts(hits, SCHEMA.field("price"), FacetSpec.parse("price:25,50,100"))
    assert [(c.label, c.count, c.low, c.high) for c in got] == [
        ("< 25", 2, None, 25.0),
        ("25 - 50", 2, 25.0, 50.0),
        (">= 100", 1, 100.0, None),  # the empty 50 - 100 band is left out
    ]
    assert got[1].filter == "price >= 25 AND price < 50"


def test_numbers_with_few_values_count_per_value_and_read_units() -> None:
    volts = ["18V", "18 V", "20V", "12V", None]
    hits = [_hit(i, attributes={"voltage": v} if v else {}) for i, v in enumerate(volts, 1)]
    got = facet_counts(hits, SCHEMA.field("voltage"), FacetSpec("voltage"))
    assert [(c.value, c.label, c.count, c.filter) for c in got] == [
        (12.0, "12", 1, "voltage = 12"),
        (18.0, "18", 2, "voltage = 18"),
        (20.0, "20", 1, "voltage = 20"),
    ]


def test_many_numbers_get_rounded_quintile_bands() -> None:
    prices = [float(p) + 0.99 for p in range(3, 400, 7)]
    cuts = default_cuts(prices)
    assert 2 <= len(cuts) <= 4 and list(cuts) == sorted(cuts)
    assert set(cuts) <= {10, 20, 25, 50, 100, 200, 250, 500}  # 1, 2, 2.5, 5 times a power of 10
    hits = [_hit(i, price=p) for i, p in enumerate(prices, start=1)]
    got = facet_counts(hits, SCHEMA.field("price"), FacetSpec("price"))
    assert sum(c.count for c in got) == len(prices)


def test_not_facetable_is_one_line_naming_the_facetable_fields() -> None:
    with pytest.raises(ShopsearchError) as err:
        parse_facets(["title"], SCHEMA)
    message = str(err.value)
    assert "\n" not in message and "facet 'title'" in message
    assert "brand, category, price, in_stock, voltage, color" in message
    with pytest.raises(ShopsearchError, match="not a facetable field"):
        parse_facets(["nope"], SCHEMA)
    with pytest.raises(ShopsearchError, match="asked twice"):
        parse_facets(["brand", "Brand"], SCHEMA)
    for bad in ("brand:10,20", "brand:0", "brand:2.5"):
        with pytest.raises(ShopsearchError, match="number of values >= 1"):
            parse_facets([bad], SCHEMA)
    with pytest.raises(ShopsearchError, match="after ':'"):
        parse_facets(["price:cheap"], SCHEMA)
    assert parse_facets(["BRAND:3"], SCHEMA) == [FacetSpec("brand", 3)]


# --------------------------------------------------------------------------------------------
# Against a polars oracle over the same candidate set (a real index)
# --------------------------------------------------------------------------------------------


def _oracle(hits, column: str) -> dict[str, int]:
    """Counts per value with polars over the candidates' payloads (keyword fields, one value)."""
    frame = pl.DataFrame(
        {column: [h.payload.get(column) for h in hits]}, schema={column: pl.String}
    )
    counted = frame.drop_nulls().group_by(column).len()
    return dict(zip(counted[column].to_list(), counted["len"].to_list(), strict=True))


def _price_oracle(hits, cuts) -> dict[str, int]:
    low, mid, high = cuts
    frame = pl.DataFrame({"price": [h.payload.get("price") for h in hits]}).drop_nulls()
    price = pl.col("price")
    band = (
        pl.when(price < low)
        .then(pl.lit(f"< {low}"))
        .when(price < mid)
        .then(pl.lit(f"{low} - {mid}"))
        .when(price < high)
        .then(pl.lit(f"{mid} - {high}"))
        .otherwise(pl.lit(f">= {high}"))
    )
    counted = frame.select(band.alias("band")).group_by("band").len()
    return dict(zip(counted["band"].to_list(), counted["len"].to_list(), strict=True))


@pytest.mark.parametrize("query", ["drill", "paint", "faucet"])
def test_plain_facets_match_the_oracle(storefront, query) -> None:
    hits = storefront.search(query, k=5, facets=["brand:100", "category:100", "price:25,50,100"])
    candidates = storefront.retriever.search(query, k=DEFAULT_RERANK_DEPTH)
    assert hits.total_candidates == len(candidates)
    assert _counts(hits.facets["brand"]) == _oracle(candidates, "brand")
    assert _counts(hits.facets["category"]) == _oracle(candidates, "category")
    assert _counts(hits.facets["price"]) == _price_oracle(candidates, (25, 50, 100))
    assert [c.count for c in hits.facets["brand"]] == sorted(
        (c.count for c in hits.facets["brand"]), reverse=True
    )


def test_disjunctive_facets_match_the_oracle(storefront) -> None:
    query = "drill"
    brand = storefront.search(query, k=50, facets=["brand"]).facets["brand"][0].label
    for selected in (
        Filters(brands=(brand,)),
        Filters(where=f'brand = "{brand}" AND in_stock = true'),
    ):
        hits = storefront.search(
            query, k=5, filters=selected, facets=["brand:100", "category:100", "in_stock"]
        )
        filtered = storefront.retriever.search(query, k=DEFAULT_RERANK_DEPTH, filters=selected)
        unbranded = storefront.retriever.search(
            query, k=DEFAULT_RERANK_DEPTH, filters=selected.without("brand")
        )
        assert hits.total_candidates == len(filtered)
        # the brand facet: each brand's count had it been chosen instead
        assert _counts(hits.facets["brand"]) == _oracle(unbranded, "brand")
        assert len(hits.facets["brand"]) > 1
        # every other facet reflects the selection
        assert _counts(hits.facets["category"]) == _oracle(filtered, "category")
        assert all(h.payload["brand"] == brand for h in hits)
    # in_stock selected too: its own facet counts without it, the brand's with it
    both = storefront.search(
        query,
        k=5,
        filters=Filters(where=f'brand = "{brand}" AND in_stock = true'),
        facets=["in_stock"],
    )
    stockless = storefront.retriever.search(
        query, k=DEFAULT_RERANK_DEPTH, filters=Filters(where=f'brand = "{brand}"')
    )
    expected = {
        "true": sum(h.payload.get("in_stock") is True for h in stockless),
        "false": sum(h.payload.get("in_stock") is False for h in stockless),
    }
    assert _counts(both.facets["in_stock"]) == {k: v for k, v in expected.items() if v}


def test_facets_of_a_list_of_hits_without_disjunction() -> None:
    hits = [_hit(1, brand="a"), _hit(2, brand="b")]
    others = [_hit(3, brand="c")]
    got = facets(hits, parse_facets(["brand"], SCHEMA), SCHEMA, {"brand": others})
    assert _counts(got["brand"]) == {"c": 1}


def test_both_backends_give_the_same_facets(storefront, sample_catalog, tiny_encoder) -> None:
    from qdrant_client import QdrantClient

    from indexer.build import index_catalog
    from rerank.pipeline import SearchPipeline
    from retrieval.retriever import Retriever
    from retrieval.store import IndexLocation

    client = QdrantClient(":memory:")
    index_catalog(
        sample_catalog, IndexLocation(client=client), encoder=tiny_encoder, progress=False
    )
    server = SearchPipeline(Retriever.open(client=client, encoder=tiny_encoder))
    brand = storefront.search("paint", k=1)[0].payload["brand"]
    asked = {"facets": ["brand", "category", "price"], "filters": {"brands": brand}, "k": 10}
    for options in (asked, {**asked, "sort": "price:desc"}):
        a, b = storefront.search("paint", **options), server.search("paint", **options)
        assert a.facets == b.facets
        assert [h.product_id for h in a] == [h.product_id for h in b]
    server.close()


def test_facet_counts_do_not_move_as_the_shopper_pages(storefront) -> None:
    """A deeper page retrieves more candidates, but the counts stay those of the first page."""
    query, asked = "drill", ["brand:100", "category:100", "price"]
    first = storefront.search(query, k=20, facets=asked)
    brand = first.facets["brand"][0].label
    for offset in (20, 40, 80):
        page = storefront.search(query, k=20, offset=offset, facets=asked)
        assert page.facets == first.facets, offset
    selected = Filters(brands=(brand,))
    first = storefront.search(query, k=10, filters=selected, facets=asked)
    deep = storefront.search(query, k=10, offset=60, filters=selected, facets=asked)
    assert deep.facets == first.facets
