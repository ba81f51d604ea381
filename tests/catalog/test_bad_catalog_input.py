"""Bad catalog input as shops send it: encoded text, colliding column names, values the store
cannot keep (a bad catalog indexed and searched: tests/indexer/test_bad_input.py)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from catalog.reader import Reject, read_catalog
from catalog.schema import Product, clean_text, is_reserved_column


def _read(path: Path) -> tuple[list[Product], list[Reject], list[str]]:
    products: list[Product] = []
    rejects: list[Reject] = []
    warnings: list[str] = []
    for batch in read_catalog(path):
        products += batch.products
        rejects += batch.rejects
        warnings += batch.warnings
    return products, rejects, warnings


# ---------------------------------------------------------------- encoded text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Black &amp; Decker", "Black & Decker"),
        ("Men&#39;s Boots", "Men's Boots"),
        ("12&quot; Saw", '12" Saw'),
        ("Tom &amp;amp; Jerry", "Tom & Jerry"),  # encoded twice
        ("AT&T", "AT&T"),  # a bare ampersand stays
        ("Deck\u00a0Screws", "Deck Screws"),
        ("Zero\u200bWidth", "ZeroWidth"),
        ("  Cafe\u0301  ", "Caf\u00e9"),  # NFC
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_entities_are_decoded_once_at_ingest_in_every_text_field(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "product_id,title,description,brand,category,attributes,note\n"
        "A&amp;1,Black &amp; Decker Drill,Drill&nbsp;&amp; bits,Black &amp; Decker,"
        'Tools &amp; Hardware > Drills,"{""finish"": ""Black &amp;amp; Chrome""}",'
        "Men&#39;s\n",
        encoding="utf-8",
    )
    (p,), rejects, _ = _read(path)
    assert not rejects
    assert p.product_id == "A&amp;1"  # ids are keys: kept exactly as given
    assert p.title == "Black & Decker Drill"
    assert p.description == "Drill & bits"
    assert p.brand == "Black & Decker"
    assert p.category == "Tools & Hardware > Drills"
    assert p.category_levels()[0] == "Tools & Hardware"
    assert p.attributes == {"finish": "Black & Chrome"}
    assert p.extra == {"note": "Men's"}


# ---------------------------------------------------------------- reserved column names


@pytest.mark.parametrize("name", ["score", "Score", "rank", "relevance", "_hash", " Title", "_x"])
def test_reserved_columns(name: str) -> None:
    assert is_reserved_column(name)


@pytest.mark.parametrize("name", ["rating", "catalog_score", "color", "scores"])
def test_ordinary_columns(name: str) -> None:
    assert not is_reserved_column(name)


def test_reserved_extra_columns_are_renamed_with_one_warning(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "product_id,title,score,_hash,rating\nK1,Drill,4.7,abc,5\nK2,Hose,3.1,def,4\n",
        encoding="utf-8",
    )
    products, rejects, warnings = _read(path)
    assert not rejects
    assert products[0].extra == {"catalog_score": "4.7", "catalog__hash": "abc", "rating": "5"}
    assert "score" not in products[1].extra and "_hash" not in products[1].extra
    assert len(warnings) == 2
    assert any("'score'" in w and "'catalog_score'" in w for w in warnings)


def test_renamed_column_does_not_overwrite_an_existing_one(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"product_id": "a", "title": "t", "score": 1, "catalog_score": 2}))
    (p,), _, _ = _read(path)
    assert p.extra == {"catalog_score": 2, "catalog_score_": 1}


# ---------------------------------------------------------------- values the store cannot keep


def test_nan_in_an_extra_column_rejects_only_its_row_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"product_id": "J1", "title": "Drill", "rating": 4.5}\n'
        '{"product_id": "J2", "title": "Hose", "rating": NaN}\n'
        '{"product_id": "J3", "title": "Tape", "rating": Infinity}\n'
        '{"product_id": "J4", "title": "Saw", "attributes": {"weight": NaN}}\n'
        '{"product_id": "J5", "title": "Nail", "brand": NaN}\n'
        '{"product_id": "J6", "title": "Bolt", "count": 123456789012345678901234567890}\n'
        '{"product_id": "J7", "title": "Rope", "rating": 4.1}\n',
        encoding="utf-8",
    )
    products, rejects, _ = _read(path)
    assert [p.product_id for p in products] == ["J1", "J7"]
    reasons = {r.line: (r.product_id, r.reason) for r in rejects}
    assert reasons[2] == ("J2", "column 'rating' is NaN (give a number, or leave it empty)")
    assert "column 'rating' is infinite" in reasons[3][1]
    assert "attributes.weight is NaN" in reasons[4][1]
    assert "brand is NaN" in reasons[5][1]
    assert "column 'count'" in reasons[6][1] and "64-bit" in reasons[6][1]


def test_nan_in_an_extra_column_rejects_only_its_row_parquet(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    pl.DataFrame(
        {
            "product_id": ["J1", "J2", "J3"],
            "title": ["Drill", "Hose", "Tape"],
            "rating": [4.5, float("nan"), 4.1],
        }
    ).write_parquet(path)
    products, rejects, _ = _read(path)
    assert [p.product_id for p in products] == ["J1", "J3"]
    assert rejects == [Reject(2, "J2", "column 'rating' is NaN (give a number, or leave it empty)")]


def test_nan_text_in_csv_is_text(tmp_path: Path) -> None:
    # CSV has no NaN: the letters "NaN" in an extra column are text, like any other.
    path = tmp_path / "c.csv"
    path.write_text("product_id,title,rating\nJ1,Drill,NaN\n", encoding="utf-8")
    (p,), rejects, _ = _read(path)
    assert not rejects and p.extra == {"rating": "NaN"}


def test_too_deep_too_long_and_unstorable_values_reject_their_row(tmp_path: Path) -> None:
    deep: object = 1
    for _ in range(20):
        deep = {"a": deep}
    path = tmp_path / "c.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"product_id": "1", "title": "t", "spec": deep}),
                json.dumps({"product_id": "2", "title": "t", "attributes": deep}),
                json.dumps({"product_id": "3", "title": "t", "notes": "x" * 20000}),
                json.dumps({"product_id": "4", "title": "t", "brand": "b" * 20000}),
                '{"product_id": "5", "title": "t", "x": ' + "[" * 5000 + "]" * 5000 + "}",
                json.dumps({"product_id": "6", "title": "t", "spec": {"a": [1, {"b": 2}]}}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    products, rejects, _ = _read(path)
    assert [p.product_id for p in products] == ["6"]
    assert products[0].extra == {"spec": {"a": [1, {"b": 2}]}}
    reasons = {r.line: r.reason for r in rejects}
    assert "column 'spec' is nested deeper than" in reasons[1]
    assert "attributes is nested deeper than" in reasons[2]
    assert "column 'notes' is 20000 characters long" in reasons[3]
    assert "brand is 20000 characters long" in reasons[4]
    assert "nested deeper than" in reasons[5]


def test_parquet_dates_and_decimals_are_stored_as_json(tmp_path: Path) -> None:
    import datetime as dt
    from decimal import Decimal

    path = tmp_path / "c.parquet"
    pl.DataFrame(
        {
            "product_id": ["a"],
            "title": ["t"],
            "released": [dt.date(2024, 5, 1)],
            "cost": pl.Series([Decimal("1.25")], dtype=pl.Decimal(10, 2)),
            "blob": [b"\x00\x01"],
        }
    ).write_parquet(path)
    products, rejects, _ = _read(path)
    assert not products
    assert "column 'blob' holds a bytes" in rejects[0].reason
    pl.read_parquet(path).drop("blob").write_parquet(path)
    (p,), rejects, _ = _read(path)
    assert not rejects
    assert p.extra == {"released": "2024-05-01", "cost": 1.25}
