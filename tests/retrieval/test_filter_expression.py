"""Filter expressions: the grammar, its errors, and the engines' results against the Python
oracle (``Filters.matches``) on a small index with declared fields, on both backends."""

from __future__ import annotations

import json
import random

import pytest
from qdrant_client import QdrantClient

from catalog.fields import Field, FieldSchema
from core.errors import ShopsearchError
from indexer.build import index_catalog
from retrieval.filters import (
    All,
    And,
    AnyOf,
    Compare,
    Filters,
    Match,
    MatchAny,
    Negation,
    Not,
    Or,
    Range,
    parse_expression,
    unparse,
)
from retrieval.retriever import Retriever
from retrieval.store import IndexLocation, open_backend

SCHEMA = FieldSchema.with_declared(
    [
        Field("voltage", "number", source="attributes.voltage", unit="V", facetable=True),
        Field("color", "keyword", facetable=True),
        Field("tags", "keyword"),
        Field("rating", "number", sortable=True),
        Field("sale", "bool"),
        Field("created_at", "date", sortable=True),
    ]
)


def cmp(field, op, *values):
    return Compare(field, op, tuple(values))


# -- grammar ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("brand = DeWalt", cmp("brand", "=", "DeWalt")),
        ('brand = "Black & Decker"', cmp("brand", "=", "Black & Decker")),
        ("brand = 'say \\'hi\\''", cmp("brand", "=", "say 'hi'")),
        ("brand IN [DeWalt, 'A B', Makita,]", cmp("brand", "IN", "DeWalt", "A B", "Makita")),
        ("brand in [x]", cmp("brand", "IN", "x")),
        ("price 10 TO 50", cmp("price", "TO", "10", "50")),
        ("price >= 10.5", cmp("price", ">=", "10.5")),
        ("created_at < 2026-01-01T10:00:00Z", cmp("created_at", "<", "2026-01-01T10:00:00Z")),
        ("brand = in", cmp("brand", "=", "in")),  # a keyword where a value is expected is one
        (
            "a = 1 OR b = 2 AND NOT c = 3",
            Or((cmp("a", "=", "1"), And((cmp("b", "=", "2"), Negation(cmp("c", "=", "3")))))),
        ),
        (
            "(a = 1 or b = 2) and not (c = 3)",
            And((Or((cmp("a", "=", "1"), cmp("b", "=", "2"))), Negation(cmp("c", "=", "3")))),
        ),
        ("NOT NOT a != 1", Negation(Negation(cmp("a", "!=", "1")))),
    ],
)
def test_parse(text, tree):
    assert parse_expression(text) == tree
    assert parse_expression(unparse(tree)) == tree  # the canonical spelling reads back


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("brand =", "ends too early"),
        ("brand = Black Decker", r"unexpected 'Decker' at column 15"),
        ("(brand = a", "ends too early"),
        ("brand = a)", r"unexpected '\)' at column 10"),
        ("price >> 3", "unexpected '>' at column 8"),
        ("brand = a AND", "ends too early"),
        ("= a", r"unexpected '=' at column 1"),
        ('brand = "open', r'unexpected \'"\' at column 9'),
        ("brand IN []", r"unexpected '\]'"),
    ],
)
def test_syntax_errors_are_one_line_with_a_column(text, message):
    with pytest.raises(ShopsearchError, match=message) as info:
        Filters(where=text)
    assert "\n" not in str(info.value) and "brand = DeWalt" in str(info.value)


def test_expression_is_checked_against_the_schema():
    with pytest.raises(ShopsearchError, match=r"unknown field 'colour': filterable fields are "):
        Filters(where="colour = red").conditions(SCHEMA)
    with pytest.raises(ShopsearchError, match="unknown field 'voltage'"):
        Filters(where="voltage = 18").conditions()  # the default schema has no voltage
    with pytest.raises(ShopsearchError, match="field 'title' \\(not filterable\\): filterable"):
        Filters(where="title = drill").conditions(SCHEMA)
    with pytest.raises(ShopsearchError, match="'cheap' is not a number; price is a number"):
        Filters(where="price >= cheap").conditions(SCHEMA)
    with pytest.raises(ShopsearchError, match="'soon' is not a date.*created_at is a date"):
        Filters(where="created_at > soon").conditions(SCHEMA)
    with pytest.raises(ShopsearchError, match="color is a keyword field; use =, != or IN"):
        Filters(where="color > red").conditions(SCHEMA)
    with pytest.raises(ShopsearchError, match="sale is a bool field; use true or false"):
        Filters(where="sale = maybe").conditions(SCHEMA)


def test_conditions_on_normalized_keys():
    assert Filters(where="Brand = 'DEWALT' AND voltage = 18V").conditions(SCHEMA) == (
        Match("_brand_key", "dewalt"),
        Range("_f_voltage", 18.0, 18.0),
    )
    day = 86400.0
    start = 1767225600.0  # 2026-01-01T00:00:00Z
    assert Filters(where="created_at = 2026-01-01").conditions(SCHEMA) == (
        Range("_f_created_at", start, None, lt=start + day),
    )
    assert Filters(where="created_at <= 2026-01-01").conditions(SCHEMA) == (
        Range("_f_created_at", None, None, lt=start + day),
    )
    assert Filters(where="created_at > 2026-01-01").conditions(SCHEMA) == (
        Range("_f_created_at", start + day, None),
    )
    (cond,) = Filters(where="NOT (sale = true OR color IN [Red, red, Blue])").conditions(SCHEMA)
    assert cond == Not(AnyOf((Match("_f_sale", 1), MatchAny("_f_color", ("red", "blue")))))
    shorthands = Filters(category="Tools", in_stock=True, where="price < 5 AND (a = 1 OR b = 2)")
    schema = FieldSchema.with_declared([Field("a", "keyword"), Field("b", "keyword")])
    conds = shorthands.conditions(schema)
    assert conds[:3] == (
        Match("_category_keys", "tools"),
        Match("_in_stock", 1),
        Range("price", None, None, lt=5.0),
    )
    assert conds[3] == AnyOf((Match("_f_a", "1"), Match("_f_b", "2")))
    assert not any(isinstance(c, All) for c in conds)  # the top-level AND is flattened


def test_without_drops_one_fields_top_level_conditions():
    flt = Filters(brands=("x",), min_price=1, where="brand = a AND (color = red OR price < 3)")
    assert flt.without("brand") == Filters(min_price=1, where="color = red OR price < 3")
    assert flt.without("price").where == flt.where  # price is inside an OR: kept
    assert flt.without("price").min_price is None
    assert Filters(where="brand = a").without("BRAND").is_empty()


def test_matches_follows_the_engine_semantics():
    payload = {"_f_color": ["red", "blue"], "_f_rating": 4.5, "_in_stock": 1}
    assert Filters(where="color = red AND color = blue").matches(payload, SCHEMA)
    assert not Filters(where="color != red").matches(payload, SCHEMA)  # any item matches
    assert Filters(where="sale != true").matches(payload, SCHEMA)  # missing: NOT holds
    assert not Filters(where="sale = false").matches(payload, SCHEMA)  # missing: no match
    assert Filters(where="rating 4 TO 5 AND in_stock = true").matches(payload, SCHEMA)
    assert Filters(in_stock=True, where="rating > 4.5 OR color = RED").matches(payload, SCHEMA)


def test_and_where_combines_expressions():
    flt = Filters(where="a = 1 OR b = 2").and_where("c = 3")
    assert parse_expression(flt.where) == And(
        (Or((cmp("a", "=", "1"), cmp("b", "=", "2"))), cmp("c", "=", "3"))
    )
    assert Filters().and_where(" ") == Filters()


# -- engines against the oracle, on both backends --------------------------------------------

EXPRESSIONS = [
    "voltage >= 18",
    "voltage 12 TO 20",
    "voltage = 18V",
    "voltage != 18",
    "NOT voltage IN [18, 20]",
    "color IN [Black, white]",
    "tags = sale",
    "tags != clearance",
    "rating > 4 OR sale = true",
    "NOT (rating > 4 OR sale = true)",
    "rating < 2 AND NOT sale = false",
    "created_at >= 2026-02-01",
    "created_at = 2026-01-05",
    "created_at < 2026-01-10T12:00:00 OR created_at > 2026-03-01",
    "category = Tools AND price < 100 OR in_stock = false",
    'category IN [Tools, "Lighting > Light Bulbs"]',
    "price 10 TO 50 AND NOT in_stock = false",
    "brand != {brand} AND (color = black OR tags IN [new, sale])",
    "brand IN [{brand}, {other}]",
]
KEYS = ["product_id", *(f.key for f in SCHEMA.fields if f.filterable)]


@pytest.fixture(scope="module")
def indexes(tmp_path_factory, sample_products, tiny_encoder):
    """The 300 sample products with declared columns, on an embedded and a server index."""
    rng = random.Random(7)
    tmp = tmp_path_factory.mktemp("expr")
    path = tmp / "catalog.jsonl"
    colors = ["Black", "white", "Red", None]
    with path.open("w") as fh:
        for p in sample_products:
            row = {
                "product_id": p.product_id,
                "title": p.title,
                "brand": p.brand,
                "category": p.category,
                "price": p.price,
                "in_stock": p.in_stock,
                "attributes": p.attributes,
                "color": rng.choice(colors),
                "tags": rng.sample(["sale", "new", "clearance"], rng.randint(0, 2)),
                "rating": rng.choice([None, 1, 1.5, 3, 4, 4.5, 5]),
                "sale": rng.choice([None, "yes", "no"]),
                "created_at": rng.choice(
                    [None, "2026-01-05", "2026-01-10T06:00:00", "2026-02-01", "2026-03-02"]
                ),
            }
            fh.write(json.dumps(row) + "\n")
    edge = IndexLocation(path=tmp / "index")
    server = IndexLocation(client=QdrantClient(":memory:"))
    for loc in (edge, server):
        index_catalog(path, loc, encoder=tiny_encoder, progress=False, schema=SCHEMA)
    brands = sorted({p.brand for p in sample_products if p.brand})
    yield {"edge": edge, "server": server}, brands[:2]


@pytest.mark.parametrize("backend", ["edge", "server"])
def test_engine_results_equal_the_oracle(indexes, tiny_encoder, backend):
    locations, (brand, other) = indexes
    loc = locations[backend]
    col = open_backend(loc).open()
    retriever = Retriever.open(
        loc.path, client=loc.client, encoder=tiny_encoder, auto_refresh_s=None
    )
    try:
        assert col.schema == SCHEMA and retriever.schema == SCHEMA
        payloads = list(col.scroll_payloads(KEYS))
        assert len(payloads) == 300
        sizes = []
        for template in EXPRESSIONS:
            flt = Filters(where=template.format(brand=json.dumps(brand), other=json.dumps(other)))
            want = {p["product_id"] for p in payloads if flt.matches(p, SCHEMA)}
            sizes.append(len(want))
            assert col.count(flt) == len(want), flt.where
            hits = retriever.search("drill", k=300, filters=flt, mode="dense", exact=True)
            assert {h.product_id for h in hits} == want, flt.where
        assert all(0 < n < 300 for n in sizes), sizes  # each expression selects something
    finally:
        retriever.close()
        col.close()


def test_shorthands_and_expressions_agree(indexes, tiny_encoder):
    locations, (brand, other) = indexes
    with Retriever.open(locations["edge"].path, encoder=tiny_encoder) as r:
        pairs = [
            (Filters(brands=(brand, other)), f'brand IN ["{brand}", "{other}"]'),
            (Filters(category="Tools"), "category = tools"),
            (Filters(min_price=10, max_price=50), "price 10 TO 50"),
            (Filters(in_stock=False), "in_stock = false"),
        ]
        for shorthand, expression in pairs:
            a = r.search("drill", k=50, filters=shorthand)
            b = r.search("drill", k=50, filters=Filters(where=expression))
            assert [h.product_id for h in a] == [h.product_id for h in b], expression
        both = r.search("drill", k=50, filters=Filters(in_stock=True, where="voltage >= 18"))
        assert all(h.payload["in_stock"] for h in both)
        with pytest.raises(ShopsearchError, match="unknown field 'colour'"):
            r.search("drill", filters=Filters(where="colour = red"))
        assert r.why_empty(Filters(where="voltage > 1000 AND price < 100")) == (
            "no product has voltage > 1000"
        )
        assert r.why_empty(Filters(where="voltage = 18 AND voltage = 20")).startswith(
            "no product meets all of: voltage = 18, voltage = 20"
        )


def test_upsert_with_another_schema_is_refused_and_sync_rewrites(
    indexes, tiny_encoder, tmp_path, sample_catalog
):
    loc = IndexLocation(path=tmp_path / "index")
    index_catalog(sample_catalog, loc, encoder=tiny_encoder, progress=False)
    with pytest.raises(ShopsearchError, match="--mode upsert cannot change them"):
        index_catalog(
            sample_catalog, loc, mode="upsert", encoder=tiny_encoder, progress=False, schema=SCHEMA
        )
    synced = index_catalog(
        sample_catalog, loc, mode="sync", encoder=tiny_encoder, progress=False, schema=SCHEMA
    )
    assert (synced.indexed, synced.unchanged, synced.total) == (300, 0, 300)
    again = index_catalog(sample_catalog, loc, mode="upsert", encoder=tiny_encoder, progress=False)
    assert (again.indexed, again.unchanged) == (0, 300)  # no --schema: the index's is kept
    col = open_backend(loc).open()
    try:
        assert col.schema == SCHEMA
        with_voltage = [p for p in col.scroll_payloads(["_f_voltage"]) if p.get("_f_voltage")]
        assert with_voltage
    finally:
        col.close()


@pytest.mark.parametrize("backend", ["edge", "server"])
def test_matches_a_hits_public_payload(indexes, tiny_encoder, backend):
    """Rules and facets see hits whose store-only ``_`` keys are dropped: same answers."""
    loc = indexes[0][backend]
    with Retriever.open(loc.path, client=loc.client, encoder=tiny_encoder) as r:
        hits = r.search("drill", k=300, mode="dense", exact=True)
        assert not any(k.startswith("_") for h in hits for k in h.payload)
        for template in EXPRESSIONS[:17]:
            flt = Filters(where=template)
            want = {
                h.product_id
                for h in r.search("drill", k=300, filters=flt, mode="dense", exact=True)
            }
            assert {h.product_id for h in hits if flt.matches(h.payload, SCHEMA)} == want, template


def test_what_the_tower_reads(sample_products):
    """The default schema keeps today's product text; a declared searchable field is added."""
    from catalog.text import product_text
    from indexer.build import indexed_text

    default = FieldSchema.default()
    assert all(indexed_text(p, default) == product_text(p) for p in sample_products)
    schema = FieldSchema.with_declared([Field("shade", "keyword", searchable=True)])
    lamp = next(
        p
        for p in sample_products
        if p.attributes.get("shade") and p.attributes["shade"] not in product_text(p)
    )
    assert indexed_text(lamp, schema) == (
        f"{product_text(lamp)} | shade: {lamp.attributes['shade']}"
    )
