"""Facets, sort, diversify and offset from the CLI (CliRunner) and HTTP (TestClient), on sample
products indexed with the sample schema (voltage as a facetable, sortable number)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from catalog.fields import SAMPLE_SCHEMA
from shopsearch.cli import main


@pytest.fixture(scope="module")
def shop_index(tmp_path_factory, tiny_model):
    """150 sample products indexed with the sample schema, from the CLI."""
    from catalog.sample import write_sample_catalog

    tmp = tmp_path_factory.mktemp("storefront-cli")
    catalog = write_sample_catalog(tmp / "catalog.parquet", n=150, seed=4)
    index = tmp / "index"
    args = ["index", str(catalog), "--index", str(index), "--model", str(tiny_model)]
    result = CliRunner().invoke(main, [*args, "--no-progress", "--schema", str(SAMPLE_SCHEMA)])
    assert result.exit_code == 0, result.output
    return index


def _cli(index, *args):
    return CliRunner().invoke(main, ["search", *args, "--index", str(index)])


def test_facets_sort_and_paging_from_the_cli(shop_index):
    args = ["drill", "--facet", "brand", "--facet", "voltage", "--facet", "price:50,100,200"]
    result = _cli(shop_index, *args, "--sort", "price:asc", "--json", "-k", "5")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out["facets"]) == {"brand", "voltage", "price"}
    assert all({"value", "label", "count", "filter"} <= set(c) for c in out["facets"]["brand"])
    assert out["total_candidates"] >= len(out["hits"]) > 0
    prices = [h["product"]["price"] for h in out["hits"]]
    assert prices == sorted(prices)
    page2 = json.loads(
        _cli(shop_index, *args, "--sort", "price:asc", "--json", "-k", "5", "--offset", "5").stdout
    )
    assert [h["rank"] for h in page2["hits"]] == list(range(6, 6 + len(page2["hits"])))
    assert page2["hits"][0]["product"]["price"] >= prices[-1]
    # the table prints each facet on a line of its own
    table = _cli(shop_index, "drill", "--facet", "brand", "--diversify", "brand:1")
    assert table.exit_code == 0, table.output
    assert "\nbrand: " in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--facet", "title"], "facet 'title': not a facetable field of this index; facetable"),
        (["--sort", "brand:asc"], "sortable fields: price, voltage"),
        (["--sort", "price:up"], "the direction is asc or desc"),
        (["--diversify", "brand:0"], "N >= 1"),
    ],
)
def test_cli_errors_are_one_line(shop_index, args, message):
    result = _cli(shop_index, "drill", *args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.fixture()
def client(make_client, shop_index):
    return make_client(index=str(shop_index))


def test_facets_and_sort_over_http(client):
    got = client.get(
        "/search",
        params=[
            ("q", "drill"),
            ("facets", "brand"),
            ("facets", "voltage"),
            ("facets", "price:50,100"),
            ("sort", "price:desc"),
            ("k", "5"),
        ],
    )
    assert got.status_code == 200, got.text
    data = got.json()
    assert list(data["facets"]) == ["brand", "voltage", "price"]
    assert data["facets"]["price"][0]["filter"].startswith("price")
    prices = [r["product"]["price"] for r in data["results"]]
    assert prices == sorted(prices, reverse=True)
    # a brand selected: the brand facet still lists the others (disjunctive)
    brand = data["facets"]["brand"][0]["label"]
    posted = client.post(
        "/search",
        json={"q": "drill", "brands": [brand], "facets": ["brand"], "diversify": "brand:1"},
    )
    assert posted.status_code == 200, posted.text
    assert len(posted.json()["facets"]["brand"]) > 1
    assert {r["product"]["brand"] for r in posted.json()["results"]} == {brand}


def test_paging_over_http_walks_one_ranking(client):
    whole = client.get("/search", params={"q": "paint", "k": 20, "sort": "price:asc"}).json()
    first = client.get("/search", params={"q": "paint", "k": 10, "sort": "price:asc"}).json()
    second = client.get(
        "/search", params={"q": "paint", "k": 10, "offset": 10, "sort": "price:asc"}
    ).json()
    ids = [r["product_id"] for r in first["results"] + second["results"]]
    assert ids == [r["product_id"] for r in whole["results"]]
    assert [r["rank"] for r in second["results"]][:1] == [11] or not second["results"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"facets": "title"}, "not a facetable field"),
        ({"sort": "color:asc"}, "sortable fields: price, voltage"),
        ({"diversify": "nope:2"}, "not a facetable field"),
    ],
)
def test_bad_storefront_fields_are_a_400(client, params, message):
    got = client.get("/search", params={"q": "drill", **params})
    assert got.status_code == 400, got.text
    assert message in got.json()["detail"] and "\n" not in got.json()["detail"]
