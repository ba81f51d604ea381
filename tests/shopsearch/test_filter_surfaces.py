"""The field schema and the filter expression from the CLI (CliRunner), HTTP (TestClient) and
Python (SearchPipeline.search(filter=)), on the sample catalog with its schema file."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from catalog.fields import SAMPLE_SCHEMA
from shopsearch.cli import main


@pytest.fixture(scope="module")
def schema_index(tmp_path_factory, tiny_model):
    """120 sample products indexed with the sample schema, from the CLI."""
    from catalog.sample import write_sample_catalog

    tmp = tmp_path_factory.mktemp("schema-cli")
    catalog = write_sample_catalog(tmp / "catalog.csv", n=120, seed=5)
    index = tmp / "index"
    args = ["index", str(catalog), "--index", str(index), "--model", str(tiny_model)]
    args += ["--no-progress", "--rejects", str(tmp / "rejects.csv"), "--schema"]
    result = CliRunner().invoke(main, [*args, str(SAMPLE_SCHEMA)])
    assert result.exit_code == 0, result.output
    return index


def test_info_lists_the_fields(schema_index):
    result = CliRunner().invoke(main, ["info", "--index", str(schema_index)])
    assert result.exit_code == 0, result.output
    fields = json.loads(result.stdout)["fields"]
    assert "voltage (number in V from attributes.voltage: filter, facet, sort)" in fields
    assert "brand (keyword: filter, facet, search)" in fields


def test_search_filter_from_the_cli(schema_index):
    runner = CliRunner()
    base = ["search", "cordless drill", "--index", str(schema_index), "--json", "-k", "20"]
    result = runner.invoke(main, [*base, "--filter", "voltage >= 18 AND NOT voltage = 120"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    assert hits
    for h in hits:
        volts = float(h["product"]["attributes"]["voltage"].removesuffix("V"))
        assert 18 <= volts < 120
    # ANDed with the shorthands
    both = runner.invoke(main, [*base, "--filter", "voltage >= 18", "--in-stock"])
    assert all(h["product"]["in_stock"] for h in json.loads(both.stdout)["hits"])


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("colour = red", "unknown field 'colour': filterable fields are brand, "),
        ("voltage >= lots", "'lots' is not a number"),
        ("voltage >=", "ends too early"),
    ],
)
def test_bad_filter_is_one_line_from_the_cli(schema_index, expression, message):
    args = ["search", "drill", "--index", str(schema_index), "--filter", expression]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_schema_file_is_one_line(tmp_path, tiny_model, sample_catalog):
    schema = tmp_path / "schema.toml"
    schema.write_text('[fields.voltage]\ntype = "volts"\n')
    args = ["index", str(sample_catalog), "--index", str(tmp_path / "i"), "--schema", str(schema)]
    result = CliRunner().invoke(main, [*args, "--model", str(tiny_model), "--no-progress"])
    assert result.exit_code == 2
    assert "field voltage: unknown type 'volts'" in result.stderr
    assert not (tmp_path / "i").exists()


@pytest.fixture()
def client(make_client, schema_index):
    return make_client(index=str(schema_index))


def test_filter_over_http(client):
    got = client.get("/search", params={"q": "drill", "filter": "voltage >= 18", "k": 20})
    assert got.status_code == 200, got.text
    results = got.json()["results"]
    assert results and all(
        float(r["product"]["attributes"]["voltage"].removesuffix("V")) >= 18 for r in results
    )
    posted = client.post(
        "/search", json={"q": "drill", "filter": "voltage >= 18", "k": 20, "in_stock": True}
    )
    assert posted.status_code == 200
    assert all(r["product"]["in_stock"] for r in posted.json()["results"])


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("brand = Black Decker", "unexpected 'Decker' at column 15"),
        ("colour = red", "unknown field 'colour'"),
        ("price >= cheap", "'cheap' is not a number"),
    ],
)
def test_bad_filter_over_http_is_a_400(client, expression, message):
    got = client.get("/search", params={"q": "drill", "filter": expression})
    assert got.status_code == 400, got.text
    assert message in got.json()["detail"] and "\n" not in got.json()["detail"]


def test_pipeline_filter_argument(tiny_encoder, schema_index):
    from rerank.pipeline import SearchPipeline
    from retrieval.retriever import Retriever

    with Retriever.open(schema_index, encoder=tiny_encoder) as retriever:
        pipeline = SearchPipeline(retriever, None, None)
        hits = pipeline.search(
            "drill", k=20, filter="power_source = battery", filters={"in_stock": True}
        )
        assert hits
        for h in hits:
            assert h.payload["attributes"]["power_source"] == "Battery" and h.payload["in_stock"]
