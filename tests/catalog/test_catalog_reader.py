"""Tests for catalog.reader: formats, validation rules, line numbers and file errors."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.reader import (
    CatalogBatch,
    CatalogError,
    Limits,
    Reject,
    detect_format,
    read_catalog,
    write_rejects,
)
from catalog.sample import generate_products, write_sample_catalog
from catalog.schema import Product


def _read(path: Path, **kwargs) -> tuple[list[Product], list[Reject], list[str]]:
    products: list[Product] = []
    rejects: list[Reject] = []
    warnings: list[str] = []
    for batch in read_catalog(path, **kwargs):
        assert isinstance(batch, CatalogBatch)
        products += batch.products
        rejects += batch.rejects
        warnings += batch.warnings
    return products, rejects, warnings


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _jsonl(path: Path, lines: list[object | str]) -> Path:
    """Write lines: strings verbatim, anything else as JSON."""
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    return _write(path, text)


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(CatalogError) as info:
        _read(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ---------------------------------------------------------------------- detect_format


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.parquet", "parquet"),
        ("a.PQ", "parquet"),
        ("a.csv", "csv"),
        ("a.tsv", "csv"),
        ("a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("dir.v2/a.json", "jsonl"),
    ],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


def test_detect_format_unknown_names_extension_and_supported_ones() -> None:
    with pytest.raises(CatalogError) as info:
        detect_format("catalog.xlsx")
    assert "'.xlsx'" in str(info.value)
    assert ".csv" in str(info.value) and ".parquet" in str(info.value)
    with pytest.raises(CatalogError, match="no extension"):
        detect_format("catalog")


# ---------------------------------------------------------------------- round trip


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "ndjson", "parquet"])
def test_round_trip_sample(tmp_path: Path, ext: str) -> None:
    path = write_sample_catalog(tmp_path / f"catalog.{ext}", n=300, seed=7)
    batches = list(read_catalog(path, batch_size=64))
    assert len(batches) >= 5
    products = [p for b in batches for p in b.products]
    assert products == generate_products(300, seed=7)
    assert not any(b.rejects or b.warnings for b in batches)


# ---------------------------------------------------------------------- CSV rules

CSV_ROWS = '''\
product_id,title,price,in_stock,category,attributes,color
A1,Cordless Drill,19.99,yes,Tools>Power Tools >  Drills,"{""voltage"": ""20V""}",red
,No id,1,true,,,
A2,,1,true,,,
A3,Bad price,abc,true,,,
A4,Negative price,-3,true,,,
A5,Bad stock,1,maybe,,,
A6,List attrs,1,true,,"[1, 2]",
A1,Duplicate,1,true,,,
A7,"Multi
line title",,,,,

A8,  Spaced title  ,  ,N,,,
A9,Bad json,1,1,,{not json,
A10,Not finite,nan,0,,,
A11,String attrs,2,FALSE,,"""a string""",
A12,Last,0,Y,,,
'''


def test_csv_reject_rules_and_line_numbers(tmp_path: Path) -> None:
    products, rejects, warnings = _read(_write(tmp_path / "c.csv", CSV_ROWS))
    assert [(r.line, r.product_id, r.reason) for r in rejects] == [
        (3, None, "missing product_id"),
        (4, "A2", "missing title"),
        (5, "A3", "price 'abc' is not a number"),
        (6, "A4", "negative price -3.0"),
        (7, "A5", "in_stock 'maybe' is not true/false/yes/no/1/0"),
        (8, "A6", "attributes is not a JSON object"),
        (9, "A1", "duplicate product_id (first seen on line 2)"),
        (14, "A9", "attributes is not a JSON object"),
        (15, "A10", "price 'nan' is not a number"),
        (16, "A11", "attributes is not a JSON object"),
    ]
    assert warnings == []
    by_id = {p.product_id: p for p in products}
    assert list(by_id) == ["A1", "A7", "A8", "A12"]
    assert by_id["A1"] == Product(
        product_id="A1",
        title="Cordless Drill",
        category="Tools > Power Tools > Drills",
        price=19.99,
        in_stock=True,
        attributes={"voltage": "20V"},
        extra={"color": "red"},
    )
    assert by_id["A7"].title == "Multi\nline title"
    assert by_id["A7"].price is None and by_id["A7"].in_stock is None
    assert by_id["A8"].title == "Spaced title"
    assert by_id["A8"].price is None and by_id["A8"].in_stock is False
    assert by_id["A12"].price == 0.0 and by_id["A12"].in_stock is True


def test_csv_line_numbers_do_not_depend_on_batch_size(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.csv", CSV_ROWS)
    expected = _read(path)
    for size in (1, 2, 3, 7):
        assert _read(path, batch_size=size) == expected


def test_duplicates_across_batches(tmp_path: Path) -> None:
    csv_path = _write(
        tmp_path / "d.csv", "product_id,title\nA,a\nB,b\nC,c\nD,d\nB,again\nA,again\n"
    )
    products, rejects, _ = _read(csv_path, batch_size=2)
    assert [p.product_id for p in products] == ["A", "B", "C", "D"]
    assert rejects == [
        Reject(6, "B", "duplicate product_id (first seen on line 3)"),
        Reject(7, "A", "duplicate product_id (first seen on line 2)"),
    ]
    batches = list(read_catalog(csv_path, batch_size=2))
    assert [len(b.products) + len(b.rejects) for b in batches] == [2, 2, 2]

    jsonl_path = _jsonl(
        tmp_path / "d.jsonl",
        [{"product_id": x, "title": x} for x in ["A", "B", "C", "D", "B"]],
    )
    products, rejects, _ = _read(jsonl_path, batch_size=2)
    assert [p.product_id for p in products] == ["A", "B", "C", "D"]
    assert rejects == [Reject(5, "B", "duplicate product_id (first seen on line 2)")]


def test_truncation_warnings_and_long_id(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "t.csv",
        "product_id,title,description\n"
        "A1,Twelve chars,short\n"
        "A2,ok,A description that is too long\n"
        f"{'x' * 11},ok,\n",
    )
    limits = Limits(max_title_chars=10, max_description_chars=12, max_id_chars=10)
    products, rejects, warnings = _read(path, limits=limits)
    assert [p.title for p in products] == ["Twelve cha", "ok"]
    assert products[1].description == "A descriptio"
    assert warnings == [
        "line 2 (product_id 'A1'): title truncated to 10 characters",
        "line 3 (product_id 'A2'): description truncated to 12 characters",
    ]
    assert rejects == [Reject(4, None, "product_id is 11 characters long (limit 10)")]


def test_default_limits_truncate_title_at_300(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", f"product_id,title\nA1,{'t' * 400}\n")
    products, _, warnings = _read(path)
    assert len(products[0].title) == 300
    assert warnings == ["line 2 (product_id 'A1'): title truncated to 300 characters"]


def test_header_names_are_stripped_and_bom_ignored(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_bytes(b"\xef\xbb\xbfproduct_id, title ,brand\r\nA1,Hammer, Ridgeline \r\n")
    products, _, _ = _read(path)
    assert products == [Product(product_id="A1", title="Hammer", brand="Ridgeline")]


# ---------------------------------------------------------------------- JSONL rules


def test_jsonl_rules_and_attributes(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "j.jsonl",
        [
            {
                "product_id": 7,
                "title": " Drill ",
                "price": "12.50",
                "in_stock": True,
                "category": ["Tools", "Power Tools"],
                "attributes": {"voltage": "20V", "dims": {"w": 3, "h": None}, "tags": ["a", "b"]},
                "rating": 4.5,
                "note": None,
            },
            "",
            {"product_id": "B", "title": "String attrs", "attributes": '{"color": "red"}'},
            {"product_id": "C", "title": "Bad string attrs", "attributes": "red"},
            {"product_id": "D", "title": "Number attrs", "attributes": 3},
            {"product_id": "E", "title": "List attrs", "attributes": [{"key": "a", "value": 1}]},
            '{"product_id": "F", "title": "broken"',
            "[1, 2]",
            {"product_id": "G", "title": "Bool price", "price": True},
            {"product_id": "H", "title": "Empty attrs", "attributes": {}, "in_stock": "no"},
            {"product_id": 1.5, "title": "Float id"},
            {"product_id": "I", "title": {"en": "Nested"}},
        ],
    )
    products, rejects, _ = _read(path)
    assert [(r.line, r.product_id, r.reason) for r in rejects] == [
        (4, "C", "attributes is not a JSON object"),
        (5, "D", "attributes is not a JSON object"),
        (6, "E", "attributes is not a JSON object"),
        (7, None, rejects[3].reason),
        (8, None, "line is not a JSON object"),
        (9, "G", "price True is not a number"),
        (11, None, "product_id 1.5 is not a string or integer"),
        (12, "I", "title is not text"),
    ]
    assert rejects[3].reason.startswith("line is not valid JSON (")
    assert products == [
        Product(
            product_id="7",
            title="Drill",
            category="Tools > Power Tools",
            price=12.5,
            in_stock=True,
            attributes={"voltage": "20V", "dims.w": 3, "tags": "a, b"},
            extra={"rating": 4.5},
        ),
        Product(product_id="B", title="String attrs", attributes={"color": "red"}),
        Product(product_id="H", title="Empty attrs", in_stock=False),
    ]


def test_jsonl_heterogeneous_attributes_after_many_rows(tmp_path: Path) -> None:
    rows: list[object] = [
        {"product_id": str(i), "title": "t", "attributes": {"color": "red"}} for i in range(150)
    ]
    rows.append({"product_id": "late", "title": "t", "attributes": {"voltage": "20V", "n": 3}})
    products, rejects, _ = _read(_jsonl(tmp_path / "h.jsonl", rows))
    assert rejects == []
    assert products[-1].attributes == {"voltage": "20V", "n": 3}


def test_jsonl_array_file_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.json", '\n[{"product_id": "A", "title": "a"}]\n')
    assert "JSON array" in _error(path)
    path = _write(tmp_path / "p.json", '{\n  "product_id": "A",\n  "title": "a"\n}\n')
    assert "pretty-printed JSON" in _error(path)


# ---------------------------------------------------------------------- Parquet


def test_parquet_struct_and_map_attributes_and_types(tmp_path: Path) -> None:
    struct_path = tmp_path / "s.parquet"
    pl.DataFrame(
        {
            "product_id": [1, 2, 3, 1],
            "title": ["Drill", "Saw", None, "Dup"],
            "price": [99.0, -1.0, 5.0, 1.0],
            "in_stock": [True, None, False, True],
            "attributes": [
                {"voltage": "20V", "color": None},
                None,
                {"voltage": None, "color": "red"},
                None,
            ],
        }
    ).write_parquet(struct_path)
    products, rejects, _ = _read(struct_path, batch_size=2)
    assert products == [
        Product(
            product_id="1", title="Drill", price=99.0, in_stock=True, attributes={"voltage": "20V"}
        )
    ]
    assert rejects == [
        Reject(2, "2", "negative price -1.0"),
        Reject(3, "3", "missing title"),
        Reject(4, "1", "duplicate product_id (first seen on row 1)"),
    ]

    map_path = tmp_path / "m.parquet"
    table = pa.table(
        {
            "product_id": ["A", "B"],
            "title": ["Faucet", "Knob"],
            "attributes": pa.array(
                [[("finish", "Chrome"), ("material", "Brass")], []],
                type=pa.map_(pa.string(), pa.string()),
            ),
        }
    )
    pq.write_table(table, map_path)
    products, rejects, _ = _read(map_path)
    assert rejects == []
    assert [p.attributes for p in products] == [{"finish": "Chrome", "material": "Brass"}, {}]


# ---------------------------------------------------------------------- file errors


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_missing_required_column(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"m.{fmt}"
    frame = pl.DataFrame({"product_id": ["A"], "name": ["x"], "price": ["1"]})
    if fmt == "csv":
        frame.write_csv(path)
    elif fmt == "jsonl":
        frame.write_ndjson(path)
    else:
        frame.write_parquet(path)
    assert _error(path) == (
        f"{path}: missing required column 'title' (columns found: product_id, name, price)"
    )


def test_wrong_separator_hint(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.csv", "product_id;title\n1;a\n")
    assert _error(path) == (
        f"{path}: missing required column 'product_id' (columns found: product_id;title); "
        "the file seems separated by ';', expected ','"
    )


def test_missing_product_id_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.csv", "id,title\n1,a\n")
    assert (
        _error(path) == f"{path}: missing required column 'product_id' (columns found: id, title)"
    )


def test_unreadable_files(tmp_path: Path) -> None:
    assert _error(tmp_path / "nope.csv") == f"{tmp_path / 'nope.csv'}: no such file"
    (tmp_path / "dir.csv").mkdir()
    assert "not a regular file" in _error(tmp_path / "dir.csv")
    empty = _write(tmp_path / "empty.csv", "")
    assert "empty" in _error(empty)
    garbage = _write(tmp_path / "g.parquet", "product_id,title\nA,a\n")
    assert _error(garbage).startswith(f"{garbage}: not a readable Parquet file (")
    quoted = _write(tmp_path / "q.csv", 'product_id,title\n1,"x"y\n2,ok\n')
    assert "badly quoted value" in _error(quoted)
    ragged = _write(tmp_path / "r.csv", "product_id,title\n1,a\n2,b,extra\n")
    assert _error(ragged) == (
        f"{ragged}: line 3 has 3 fields but the header has 2; "
        "quote values that contain the separator"
    )


def test_encodings(tmp_path: Path) -> None:
    path = _write(tmp_path / "l.csv", "product_id,title\n1,Caf\u00e9 table\n", encoding="latin-1")
    message = _error(path)
    assert "not valid UTF-8" in message and "encoding=" in message
    assert _read(path, encoding="latin-1")[0][0].title == "Caf\u00e9 table"
    assert _read(path, encoding="utf8-lossy")[0][0].title == "Caf\ufffd table"
    assert "unknown encoding 'klingon'" in _error(path, encoding="klingon")

    jpath = _write(tmp_path / "l.jsonl", '{"product_id": "1", "title": "Caf\u00e9"}\n', "latin-1")
    assert "line 1 is not valid utf-8" in _error(jpath)
    assert _read(jpath, encoding="cp1252")[0][0].title == "Caf\u00e9"


def test_transcoded_temp_file_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    path = _write(tmp_path / "l.csv", "product_id,title\n1,a\n2,b\n3,c\n", encoding="latin-1")
    assert len(_read(path, encoding="latin-1")[0]) == 3
    batches = read_catalog(path, encoding="latin-1", batch_size=1)
    next(batches)
    assert list(scratch.iterdir())
    batches.close()
    assert list(scratch.iterdir()) == []


# ---------------------------------------------------------------------- write_rejects


def test_write_rejects(tmp_path: Path) -> None:
    rejects = [
        Reject(3, None, "missing product_id"),
        Reject(5, "A, B", 'price "x" is not a number'),
    ]
    out = tmp_path / "sub" / "rejects.csv"
    assert write_rejects(iter(rejects), out) == 2
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows == [
        ["line", "product_id", "reason"],
        ["3", "", "missing product_id"],
        ["5", "A, B", 'price "x" is not a number'],
    ]
