"""Merchandising rules over HTTP: the admin endpoints (keys, validation, 404/409), pickup by a
running service without a restart, the marks on /search results and paging."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from rerank.pipeline import SearchPipeline
from rerank.rules import RuleStore
from retrieval.retriever import Retriever
from shopsearch.service import ServiceSettings, create_app

ADMIN = {"X-API-Key": "k", "X-Admin-Key": "a"}
KEY = {"X-API-Key": "k"}


@pytest.fixture()
def client(index_dir, tiny_encoder, tmp_path):
    """A service on the tiny index with its rules in a tmp SHOPSEARCH_RULES_DIR."""

    def factory(settings: ServiceSettings) -> SearchPipeline:
        retriever = Retriever.open(settings.index, encoder=tiny_encoder)
        return SearchPipeline(retriever, rules=RuleStore(settings.rules_dir))

    settings = ServiceSettings(
        index=str(index_dir),
        rules_dir=str(tmp_path),
        api_key="k",
        admin_key="a",
        background_load=False,
    )
    with TestClient(create_app(settings, pipeline_factory=factory)) as c:
        yield c


def search(client, q: str, **params) -> dict:
    got = client.get("/search", params={"q": q, **params}, headers=KEY)
    assert got.status_code == 200, got.text
    return got.json()


def ids(page: dict) -> list[str]:
    return [r["product_id"] for r in page["results"]]


def test_a_rule_added_over_http_applies_to_the_next_search(client, tmp_path):
    base = ids(search(client, "cordless drill", k=20))
    target = base[15]
    added = client.post(
        "/admin/rules",
        json={"action": "pin", "query": "Cordless Drill", "products": [target], "position": 2},
        headers=ADMIN,
    )
    assert added.status_code == 201, added.text
    rule = added.json()
    assert rule["id"] == "r1" and rule["query"] == "cordless drill" and rule["created"]
    assert rule["description"] == f'r1: pin {target} at 2 for exact "cordless drill"'
    stored = json.loads((tmp_path / "rules.json").read_text())["entries"]
    assert [e["id"] for e in stored] == ["r1"]
    page = search(client, "cordless drill", k=5)  # no restart, no reload
    assert ids(page)[1] == target and page["rules"] == ["r1"]
    assert page["results"][1]["merchandising"] == [{"rule": "r1", "action": "pin"}]
    assert page["results"][0]["merchandising"] is None
    listed = client.get("/admin/rules", headers=ADMIN).json()["rules"]
    assert [r["id"] for r in listed] == ["r1"]
    gone = client.delete("/admin/rules/r1", headers=ADMIN)
    assert gone.status_code == 200 and gone.json()["id"] == "r1"
    assert ids(search(client, "cordless drill", k=5)) == base[:5]
    assert client.delete("/admin/rules/r1", headers=ADMIN).status_code == 404


def test_an_edit_from_the_command_line_is_seen_by_the_running_service(client, tmp_path):
    from rerank.rules import Rule

    first = ids(search(client, "drill", k=3))[0]
    RuleStore(tmp_path).add(Rule("cli", "hide", "exact", "drill", products=(first,)))
    assert first not in ids(search(client, "drill", k=3))


def test_paging_over_http_keeps_pins_at_their_rank_and_hidden_ones_out(client):
    base = ids(search(client, "led light bulb", k=40))
    pin, hidden = base[35], base[3]
    for body in (
        {"action": "pin", "query": "led light bulb", "products": [pin], "position": 12},
        {"action": "hide", "match": "contains", "query": "bulb", "products": [hidden]},
    ):
        assert client.post("/admin/rules", json=body, headers=ADMIN).status_code == 201
    flat = []
    for offset in (0, 10, 20, 30):
        page = search(client, "led light bulb", k=10, offset=offset)
        assert [r["rank"] for r in page["results"]] == list(range(offset + 1, offset + 11))
        flat += ids(page)
    assert flat.count(pin) == 1 and flat.index(pin) == 11
    assert hidden not in flat and len(set(flat)) == 40


def test_a_redirect_says_what_was_searched(client):
    body = {"action": "redirect", "query": "lamp thing", "redirect": "led light bulb"}
    assert client.post("/admin/rules", json=body, headers=ADMIN).status_code == 201
    page = search(client, "lamp thing")
    assert page["redirected"] == "led light bulb"
    assert ids(page) == ids(search(client, "led light bulb"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"action": "pin", "query": "x", "products": ["NOPE"], "position": 1}, "not in the index"),
        ({"action": "pin", "query": "x", "products": ["{d}"], "position": 1001}, "1 to 1000"),
        ({"action": "boost", "match": "any", "filter": "voltage >= 18", "percent": 5}, "voltage"),
        ({"action": "boost", "match": "any", "filter": "brand = = x", "percent": 5}, "filter"),
        ({"action": "hide", "query": "x", "products": ["{d}"], "start": "soon"}, "ISO 8601"),
        ({"action": "hide", "query": "x", "products": ["{d}"], "position": 2}, "takes no"),
    ],
)
def test_a_bad_rule_is_a_one_line_400(client, drills, tmp_path, body, message):
    body = json.loads(json.dumps(body).replace("{d}", drills[0]))
    got = client.post("/admin/rules", json=body, headers=ADMIN)
    assert got.status_code == 400, got.text
    assert message in got.json()["detail"] and "\n" not in got.json()["detail"]
    assert not (tmp_path / "rules.json").exists()


def test_overlapping_pins_are_refused(client, drills):
    body = {"action": "pin", "query": "drill", "products": [drills[0]], "position": 1}
    assert client.post("/admin/rules", json=body, headers=ADMIN).status_code == 201
    again = client.post("/admin/rules", json={**body, "products": [drills[1]]}, headers=ADMIN)
    assert again.status_code == 400 and "already pins position 1" in again.json()["detail"]
    assert client.post("/admin/rules", json={"action": "pin"}, headers=ADMIN).status_code == 400
    assert client.post("/admin/rules", json={"match": "any"}, headers=ADMIN).status_code == 422


def test_the_trial_endpoint_shows_what_the_rules_do(client, drills):
    body = {"action": "hide", "match": "any", "products": [drills[0]]}
    assert client.post("/admin/rules", json=body, headers=ADMIN).status_code == 201
    got = client.get("/admin/rules/test", params={"q": "drill", "k": 5}, headers=ADMIN)
    assert got.status_code == 200, got.text
    trial = got.json()
    assert [r["id"] for r in trial["fired"]] == ["r1"] and len(trial["results"]) == 5
    assert drills[0] not in [r["product_id"] for r in trial["results"]]
    assert set(trial["rank_without_rules"]) == {r["product_id"] for r in trial["results"]}


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"X-API-Key": "k"}, 403), ({"X-API-Key": "k", "X-Admin-Key": "no"}, 403)],
)
def test_rules_endpoints_need_both_keys(client, headers, status):
    assert client.get("/admin/rules", headers=headers).status_code == status
    body = {"action": "hide", "match": "any", "products": ["x"]}
    assert client.post("/admin/rules", json=body, headers=headers).status_code == status
    assert client.delete("/admin/rules/r1", headers=headers).status_code == status
    assert client.get("/admin/rules/test?q=drill", headers=headers).status_code == status


def test_a_server_index_without_a_rules_dir_is_a_409(tiny_encoder):
    from unittest import mock

    settings = ServiceSettings(
        qdrant_url="http://localhost:1", api_key="k", admin_key="a", background_load=False
    )
    app = create_app(settings, pipeline_factory=mock.Mock())
    with TestClient(app) as c:
        got = c.get("/admin/rules", headers=ADMIN)
    assert got.status_code == 409 and "SHOPSEARCH_RULES_DIR" in got.json()["detail"]
