"""``PATCH /admin/products`` and ``shopsearch update``: live price and stock from the surfaces."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from retrieval.store import IndexLocation, open_backend
from shopsearch.cli import main

API_KEY = "test-api-key"
ADMIN_KEY = "test-admin-key"


@pytest.fixture()
def own_index(tmp_path, index_dir):
    """A copy of the session's tiny index that this test may change."""
    path = tmp_path / "index"
    shutil.copytree(index_dir, path)
    return path


def _price(path, pid) -> float:
    col = open_backend(IndexLocation(path=path)).open()
    try:
        return col.retrieve([pid])[pid].payload["price"]
    finally:
        col.close()


def test_patch_needs_both_keys_and_is_seen_by_the_next_search(make_client, own_index, drills):
    client = make_client(index=str(own_index), personal=None, api_key=API_KEY, admin_key=ADMIN_KEY)
    body = {"products": [{"product_id": drills[0], "price": 4321.0, "in_stock": False}]}
    assert client.patch("/admin/products", json=body).status_code == 401
    user = {"X-API-Key": API_KEY}
    assert client.patch("/admin/products", json=body, headers=user).status_code == 403
    admin = {**user, "X-Admin-Key": ADMIN_KEY}
    answer = client.patch("/admin/products", json=body, headers=admin)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["updated"] == 1 and got["fields"] == ["in_stock", "price"] and got["build_id"]
    search = {"q": "cordless drill", "k": 5, "min_price": 4000, "max_price": 5000}
    hits = client.post("/search", json=search, headers=user).json()["results"]
    assert [h["product_id"] for h in hits] == [drills[0]]
    assert hits[0]["product"]["price"] == 4321.0
    stocked = client.post(
        "/search", json={"q": "cordless drill", "k": 50, "in_stock": True}, headers=user
    ).json()["results"]
    assert drills[0] not in {h["product_id"] for h in stocked}


def test_patch_refuses_a_bad_row_whole(make_client, own_index, drills):
    client = make_client(index=str(own_index), personal=None, admin_key=ADMIN_KEY)
    admin = {"X-Admin-Key": ADMIN_KEY}
    before = _price(own_index, drills[0])
    for bad, says in (
        ({"product_id": drills[1], "price": -3}, "negative price"),
        ({"product_id": drills[1], "title": "x"}, "shopsearch index"),
        ({"product_id": "NO-SUCH", "price": 1}, "not in the index"),
        ({"product_id": drills[1], "in_stock": "perhaps"}, "true/false"),
    ):
        body = {"products": [{"product_id": drills[0], "price": 1.0}, bad]}
        answer = client.patch("/admin/products", json=body, headers=admin)
        assert answer.status_code == 400, answer.text
        assert says in answer.json()["detail"] and "row 2" in answer.json()["detail"]
    assert client.patch("/admin/products", json={"products": []}, headers=admin).status_code == 422
    assert _price(own_index, drills[0]) == before


def test_update_command(own_index, drills, tmp_path):
    runner = CliRunner()
    good = tmp_path / "prices.csv"
    good.write_text(f"product_id,price,in_stock\n{drills[0]},12.5,no\n")
    result = runner.invoke(main, ["update", str(good), "--index", str(own_index)])
    assert result.exit_code == 0, result.output
    assert "updated 1 product(s) (in_stock, price)" in result.output
    assert _price(own_index, drills[0]) == 12.5
    bad = tmp_path / "bad.csv"
    bad.write_text(f"product_id,price\n{drills[1]},3\n{drills[0]},-1\n")
    result = runner.invoke(main, ["update", str(bad), "--index", str(own_index)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "bad.csv line 3" in result.output
    title = tmp_path / "title.csv"
    title.write_text(f"product_id,title\n{drills[0]},New\n")
    result = runner.invoke(main, ["update", str(title), "--index", str(own_index)])
    assert result.exit_code == 2 and "--mode upsert" in result.output
    assert _price(own_index, drills[0]) == 12.5
