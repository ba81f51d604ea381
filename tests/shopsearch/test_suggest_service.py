"""``GET /suggest`` on the tiny index: keys, limits, the log's queries, context, forgetting."""

from __future__ import annotations

import time

from personalization import searchlog


def _suggest(client, q, **params):
    r = client.get("/suggest", params={"q": q, **params}, headers={"X-API-Key": "key"})
    assert r.status_code == 200, r.text
    return r.json()


def _texts(answer):
    return [s["text"] for s in answer["suggestions"]]


def _log(folder, query, shoppers, pseudonym=lambda i: f"p{i}"):
    rows = []
    for i in range(shoppers):
        sid = f"s{i}"
        rows.append(
            {
                "event": "search",
                "timestamp": 1_800_000_000.0 + i,
                "search_id": sid,
                "pseudonym": pseudonym(i),
                "session": "",
                "query": query,
                "results": ["x"],
            }
        )
        rows.append({"event": "click", "timestamp": 1_800_000_001.0 + i, "search_id": sid})
    folder.mkdir(exist_ok=True)
    return searchlog.write_segment(folder / "20261201T000000Z-test.parquet", rows)


def test_suggest_completes_from_the_catalog_with_the_api_key(make_client):
    client = make_client(api_key="key")
    client.app.state.suggestions.refresh(force=True)
    answer = _suggest(client, "dri")
    assert answer["ready"] and answer["q"] == "dri" and not answer["personalized"]
    assert "drill" in [t.lower() for t in _texts(answer)]
    assert all(s["source"] == "catalog" for s in answer["suggestions"])
    assert len(_suggest(client, "d", k=3)["suggestions"]) == 3
    # empty or blank: an empty list, not an error
    assert _suggest(client, "")["suggestions"] == [] and _suggest(client, "  ")["suggestions"] == []
    assert client.get("/suggest", params={"q": "dri"}).status_code == 401
    too_long = client.get("/suggest", params={"q": "d" * 101}, headers={"X-API-Key": "key"})
    assert too_long.status_code == 422
    assert client.get("/suggest?q=d&k=0", headers={"X-API-Key": "key"}).status_code == 422
    assert client.get("/suggest?q=d&k=51", headers={"X-API-Key": "key"}).status_code == 422
    assert "/suggest" in client.get("/openapi.json", headers={"X-API-Key": "key"}).json()["paths"]
    # POST takes the same fields in a body (a shopper id stays out of the URL)
    posted = client.post(
        "/suggest", json={"q": "dri", "user_id": "bob"}, headers={"X-API-Key": "key"}
    )
    assert posted.status_code == 200 and _texts(posted.json()) == _texts(answer)
    unknown = client.post("/suggest", json={"q": "dri", "kk": 3}, headers={"X-API-Key": "key"})
    assert unknown.status_code == 422


def test_suggest_before_the_first_build_is_empty_and_not_ready(make_client):
    client = make_client()
    client.app.state.suggestions.close(timeout=60)  # its thread built nothing, say
    client.app.state.suggestions.suggester = None
    answer = client.get("/suggest", params={"q": "dri"}).json()
    assert answer == {"q": "dri", "suggestions": [], "ready": False, "personalized": False}


def test_logged_queries_need_min_shoppers_and_a_rewritten_log_rebuilds(make_client, tmp_path):
    folder = tmp_path / "log"
    _log(folder, "sawhorse brackets", 4)
    client = make_client(api_key="key", search_log=str(folder), suggest_min_shoppers=4)
    service = client.app.state.suggestions
    service.log_dir = str(folder)  # (the setting is read from the settings when present)
    service.refresh(force=True)
    answer = _suggest(client, "sawhorse")
    assert [(x["text"], x["source"]) for x in answer["suggestions"]] == [
        ("sawhorse brackets", "log")
    ]
    assert not service.refresh()  # nothing changed: no rebuild
    # the log rewritten without one shopper (what forget-user does): rebuilt at the next look
    _log(folder, "sawhorse brackets", 3)
    assert service.refresh()
    assert _suggest(client, "sawhorse")["suggestions"] == []


def test_the_shoppers_profile_is_the_context(make_client, sample_products):
    client = make_client()
    client.app.state.suggestions.refresh(force=True)
    drill = next(p for p in sample_products if p.category and "Drills" in p.category)
    r = client.post(
        "/events",
        json={
            "events": [
                {
                    "user_id": "alice",
                    "timestamp": time.time() - 60,
                    "event": "purchase",
                    "product_id": drill.product_id,
                }  # fmt: skip
            ]
        },
    )
    assert r.status_code == 200, r.text
    plain = client.get("/suggest", params={"q": "d", "k": 20}).json()
    warm = client.get("/suggest", params={"q": "d", "k": 20, "user_id": "alice"}).json()
    cold = client.get("/suggest", params={"q": "d", "k": 20, "user_id": "nobody"}).json()
    assert warm["personalized"] and not cold["personalized"] and not plain["personalized"]
    assert _texts(cold) == _texts(plain)
    lifted = {s["text"]: s["score"] for s in warm["suggestions"]}
    before = {s["text"]: s["score"] for s in plain["suggestions"]}
    assert any(lifted.get(t, 0) > before[t] for t in before)  # the shopper's category, lifted


def test_forgetting_a_shopper_drops_their_query_below_the_threshold(make_client, tmp_path):
    from shopsearch.service import ServiceSettings

    if "search_log" not in ServiceSettings.model_fields:
        import pytest

        pytest.skip("this service keeps no search log")
    folder = tmp_path / "served-log"
    client = make_client(search_log=str(folder), admin_key="admin", suggest_min_shoppers=3)
    for i in range(3):
        user = f"shopper-{i}"
        r = client.post("/search", json={"q": "sawhorse brackets", "user_id": user, "k": 3})
        assert r.status_code == 200, r.text
        found = r.json()
        click = {
            "user_id": user,
            "timestamp": time.time(),
            "event": "click",
            "product_id": found["results"][0]["product_id"],
            "search_id": found["search_id"],
        }
        assert client.post("/events", json={"events": [click]}).status_code == 200
    client.app.state.search_log.flush()
    service = client.app.state.suggestions
    service.refresh(force=True)
    got = client.get("/suggest", params={"q": "sawhorse b"}).json()["suggestions"]
    assert [(s["text"], s["source"]) for s in got] == [("sawhorse brackets", "log")]

    r = client.delete("/users/shopper-1", headers={"X-Admin-Key": "admin"})
    assert r.status_code == 200, r.text
    assert service.refresh()  # the log's erasure is seen at the next look, not in 5 minutes
    assert client.get("/suggest", params={"q": "sawhorse b"}).json()["suggestions"] == []
