"""The field schema: defaults, schema files and their one-line errors, normalized values,
and rows the reader rejects because a declared value does not fit its type."""

from __future__ import annotations

import csv
import json

import pytest

from catalog.fields import SAMPLE_SCHEMA, Field, FieldSchema
from catalog.reader import read_catalog
from catalog.schema import Product
from core.errors import ShopsearchError


def _toml(tmp_path, text: str):
    path = tmp_path / "schema.toml"
    path.write_text(text)
    return path


def test_default_schema_keeps_todays_keys():
    schema = FieldSchema.default()
    assert schema.names("filterable") == ("brand", "category", "price", "in_stock")
    assert schema.names("sortable") == ("price",)
    assert schema.names("searchable") == ("brand", "category", "title")  # what the tower reads
    keys = {f.name: f.key for f in schema.fields if f.filterable}
    assert keys == {
        "brand": "_brand_key",
        "category": "_category_keys",
        "price": "price",
        "in_stock": "_in_stock",
    }
    assert schema.declared() == () and schema.payload_indexes() == ()
    assert FieldSchema.from_manifest({}) == schema  # an index built before schemas


def test_schema_file_round_trips_through_the_manifest(tmp_path):
    path = _toml(
        tmp_path,
        """
        [fields.voltage]
        type = "number"
        unit = "V"
        source = "attributes.voltage"
        facetable = true
        sortable = true

        [fields.color]
        type = "keyword"

        [fields.created_at]
        type = "date"
        sortable = true

        [fields.price]          # a default: only what it can do changes
        type = "number"
        facetable = false
        sortable = true
        """,
    )
    schema = FieldSchema.load(path)
    assert schema.field("VOLTAGE").key == "_f_voltage"  # names are case-insensitive
    assert schema.field("price").key == "price" and not schema.field("price").facetable
    assert schema.payload_indexes() == (
        ("_f_voltage", "float"),
        ("_f_color", "keyword"),
        ("_f_created_at", "float"),
    )
    assert FieldSchema.from_manifest({"fields": schema.to_manifest()}) == schema
    as_json = tmp_path / "schema.json"
    as_json.write_text(json.dumps({"fields": {"color": {"type": "keyword"}}}))
    assert FieldSchema.load(as_json).field("color").type == "keyword"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[fields.v]\ntype = "integer"', r"field v: unknown type 'integer'; use keyword"),
        (
            '[fields.v]\ntype = "number"\nsearchble = true',
            r"field v: unknown option\(s\) searchble",
        ),
        ('[fields.v]\ntype = "number"\n[fields.v]\ntype = "bool"', r"schema.toml: .*v"),
        ('[fields.v]\ntype = "number"\n[fields.V]\ntype = "bool"', r"field V is declared twice"),
        ("[fields.v]\nfacetable = true", r"field v: give its type"),
        ('[fields."9v"]\ntype = "number"', r"field name '9v'"),
        ('[fields.brand]\ntype = "number"', r"field brand is a default field"),
        ('[fields.v]\ntype = "keyword"\nunit = "V"', r"field v: unit is for number fields"),
        ('[fields.v]\ntype = "number"\nfacetable = "yes"', r"field v: facetable must be true"),
        ("[field.v]\ntype = 'number'", r"unknown top-level key\(s\) \['field'\]"),
        ("fields = [", r"schema.toml: "),
    ],
)
def test_schema_file_errors_are_one_line(tmp_path, text, message):
    with pytest.raises(ShopsearchError, match=message) as info:
        FieldSchema.load(_toml(tmp_path, text))
    assert "\n" not in str(info.value)


def test_json_duplicate_name_is_an_error(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"fields": {"v": {"type": "number"}, "v": {"type": "bool"}}}')
    with pytest.raises(ShopsearchError, match="'v' is declared twice"):
        FieldSchema.load(path)


def test_unknown_field_names_the_ones_that_exist():
    with pytest.raises(ShopsearchError, match=r"unknown field 'volt': this index has brand, "):
        FieldSchema.default().field("volt")
    with pytest.raises(ShopsearchError, match="not sortable: sortable fields are price"):
        FieldSchema.default().require("brand", "sortable")


@pytest.mark.parametrize(
    ("field", "value", "normalized"),
    [
        (Field("v", "number", unit="V"), "18V", 18.0),
        (Field("v", "number", unit="V"), " 18 v", 18.0),
        (Field("n", "number"), "1,500", 1500.0),
        (Field("n", "number"), 4, 4.0),
        (Field("b", "bool"), "Yes", 1),
        (Field("b", "bool"), False, 0),
        (Field("d", "date"), "1970-01-02", 86400.0),
        (Field("d", "date"), "1970-01-01T01:00:00+01:00", 0.0),
        (Field("k", "keyword"), "Black &amp;  DECKER", ["black & decker"]),
        (Field("k", "keyword"), ["Red", "red", "Blue"], ["red", "blue"]),
        (Field("k", "keyword"), 18.0, ["18"]),
        (Field("c", "category"), "Tools>Drills", ["tools", "tools > drills"]),
        (Field("k", "keyword"), "  ", None),
    ],
)
def test_normalized_values(field, value, normalized):
    assert field.normalize(value) == normalized


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        (Field("voltage", "number", unit="V"), "18 Amp", r"voltage: '18 Amp' is not a number"),
        (Field("rating", "number"), "nan", "rating: 'nan' is not a finite number"),
        (Field("rating", "number"), True, "rating: True is not a number"),
        (Field("sale", "bool"), "maybe", "sale: 'maybe' is not true/false"),
        (Field("created_at", "date"), "yesterday", "created_at: 'yesterday' is not a date"),
        (Field("rating", "number"), [1, 2], "rating: a list is not a single number"),
    ],
)
def test_values_that_do_not_fit_say_why(field, value, reason):
    with pytest.raises(ValueError, match=reason):
        field.normalize(value)


def test_value_comes_from_column_then_attributes():
    product = Product(
        "p1", "Drill", attributes={"voltage": "18V", "color": "Red"}, extra={"color": "Blue"}
    )
    assert Field("voltage", "number", unit="V").value(product) == "18V"
    assert Field("color", "keyword").value(product) == "Blue"  # the column wins
    assert Field("c", "keyword", source="attributes.color").value(product) == "Red"
    payload = {"attributes": {"voltage": "18V"}, "brand": "X"}
    assert Field("voltage", "number").value(payload) == "18V"
    assert Field("brand", "keyword").value(payload) == "X"


def test_sample_schema_reads_every_sample_product(sample_products):
    schema = FieldSchema.load(SAMPLE_SCHEMA)
    stored = [schema.payload(p) for p in sample_products]
    assert any(s.get("_f_voltage") == 18.0 for s in stored)
    assert any(s.get("_f_power_source") == ["battery"] for s in stored)


def test_reader_rejects_rows_whose_declared_value_does_not_fit(tmp_path):
    path = tmp_path / "catalog.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["product_id", "title", "rating", "attributes"])
        w.writerow(["a", "Drill", "4.5", '{"voltage": "18V"}'])
        w.writerow(["b", "Saw", "great", "{}"])
        w.writerow(["c", "Hammer", "", '{"voltage": "lots"}'])
        w.writerow(["d", "Level", "", ""])
    schema = FieldSchema.with_declared(
        [Field("rating", "number"), Field("voltage", "number", unit="V")]
    )
    batches = list(read_catalog(path, schema=schema))
    assert [p.product_id for b in batches for p in b.products] == ["a", "d"]
    rejects = {r.product_id: r.reason for b in batches for r in b.rejects}
    assert set(rejects) == {"b", "c"}
    assert "rating: 'great' is not a number (declared number)" in rejects["b"]
    assert "voltage: 'lots' is not a number" in rejects["c"]
    # without a schema the same rows are fine
    assert sum(len(b.products) for b in read_catalog(path)) == 4


def test_facetable_only_field_is_stored_and_indexed():
    schema = FieldSchema.with_declared(
        [Field("color", "keyword", filterable=False, facetable=True)]
    )
    assert schema.payload(Product("p", "Lamp", extra={"color": "Red"})) == {"_f_color": ["red"]}
    assert schema.payload_indexes() == (("_f_color", "keyword"),)
