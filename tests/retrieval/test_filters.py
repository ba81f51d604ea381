"""Filters: values as strings (URL parameters), spelling-insensitive keyword keys."""

from __future__ import annotations

import math

import pytest

from core.errors import ShopsearchError
from retrieval.filters import Filters
from retrieval.store import category_keys, keyword_key
from retrieval.store.request import Match, MatchAny, Range, conditions


@pytest.mark.parametrize("text", ["false", "False", " 0 ", "no", "NO", 0, False])
def test_in_stock_false_spellings(text):
    assert Filters.coerce({"in_stock": text}).in_stock is False


@pytest.mark.parametrize("text", ["true", "TRUE", "1", "yes", 1, True])
def test_in_stock_true_spellings(text):
    assert Filters.coerce({"in_stock": text}).in_stock is True


def test_unreadable_bool_names_the_field():
    with pytest.raises(ShopsearchError, match=r"in_stock='maybe': use true or false"):
        Filters.coerce({"in_stock": "maybe"})
    with pytest.raises(ShopsearchError, match="in_stock"):
        Filters(in_stock=2)  # type: ignore[arg-type]


def test_prices_from_strings():
    flt = Filters.coerce({"min_price": "100", "max_price": " 250.5 "})
    assert (flt.min_price, flt.max_price) == (100.0, 250.5)
    assert Filters.coerce({"min_price": ""}).is_empty()


@pytest.mark.parametrize("bad", [math.nan, "nan", "NaN", math.inf, "-inf", "1e999"])
def test_non_finite_price_is_refused(bad):
    with pytest.raises(ShopsearchError, match="max_price"):
        Filters.coerce({"max_price": bad})


@pytest.mark.parametrize("bad", ["cheap", "-1", -1, True, [3]])
def test_bad_price_is_refused(bad):
    with pytest.raises(ShopsearchError, match="min_price"):
        Filters.coerce({"min_price": bad})


def test_min_above_max():
    with pytest.raises(ShopsearchError, match="above max_price"):
        Filters.coerce({"min_price": "10", "max_price": "5"})


def test_brands_comma_separated_and_lists():
    assert Filters.coerce({"brand": "DeWalt, Makita"}).brands == ("DeWalt", "Makita")
    assert Filters.coerce({"brands": ["DeWalt", "Makita,Bosch"]}).brands == (
        "DeWalt",
        "Makita",
        "Bosch",
    )
    assert Filters.coerce({"brands": " , "}).brands is None
    with pytest.raises(ShopsearchError, match="brands"):
        Filters.coerce({"brands": [1, 2]})
    with pytest.raises(ShopsearchError, match="unknown filter"):
        Filters.coerce({"colour": "red"})


def test_category_must_be_text():
    with pytest.raises(ShopsearchError, match="category"):
        Filters.coerce({"category": 5})
    assert Filters.coerce({"category": " Tools >  Drills "}).category == "Tools > Drills"


def test_keyword_keys_ignore_case_spaces_and_entities():
    assert keyword_key("Black &amp;  DECKER ") == keyword_key("black & decker") == "black & decker"
    assert category_keys("Tools &amp; Hardware > Power  Tools") == [
        "tools & hardware",
        "tools & hardware > power tools",
    ]
    assert category_keys(None) == []


def test_conditions_use_normalized_keys():
    flt = Filters(
        category="TOOLS > power tools",
        brands=("DeWalt",),
        min_price=1,
        max_price=2,
        in_stock=False,
    )
    assert conditions(flt) == (
        Match("_category_keys", "tools > power tools"),
        MatchAny("_brand_key", ("dewalt",)),
        Range("price", 1.0, 2.0),
        Match("_in_stock", 0),
    )


def test_parts_name_each_condition():
    names = [n for n, _ in Filters(brands=("dewalt",), in_stock=True).parts()]
    assert names == ["brand 'dewalt'", "in stock"]


def test_filters_validation():
    assert Filters().is_empty()
    assert Filters.coerce({"brand": "Acme"}).brands == ("Acme",)
    assert Filters.coerce({"category": "Tools>Drills"}).category == "Tools > Drills"
    with pytest.raises(ShopsearchError, match="unknown filter"):
        Filters.coerce({"colour": "red"})
    with pytest.raises(ShopsearchError, match="negative"):
        Filters(min_price=-1)


def test_text_is_one_expression_that_means_the_same_filters():
    """What the search log records: the fields and the expression as one ``where`` text,
    parsed back to the same test on payloads."""
    f = Filters(
        category="Tools > Drills", brands=("DeWalt", 'Say "Hi"'), min_price=10, in_stock=True,
        where="price < 500 OR brand = Makita",
    )  # fmt: skip
    text = f.text()
    assert text == (
        'category = "Tools > Drills" AND brand IN ["DeWalt", "Say \\"Hi\\""] AND price >= 10 '
        "AND in_stock = true AND (price < 500 OR brand = Makita)"
    )
    again = Filters(where=text)
    for payload in (
        {"category": "Tools > Drills", "brand": "DeWalt", "price": 99.0, "in_stock": True},
        {"category": "Tools > Drills", "brand": "DeWalt", "price": 9.0, "in_stock": True},
        {"category": "Garden", "brand": "DeWalt", "price": 99.0, "in_stock": True},
    ):
        assert again.matches(payload) == f.matches(payload), payload
    assert Filters().text() is None
