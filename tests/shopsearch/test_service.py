"""The HTTP search service: every endpoint through FastAPI's TestClient on a tiny index, one real
uvicorn (two workers) over loopback, and the search page in headless Chromium when installed."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from core.errors import ShopsearchError
from indexer.build import index_catalog
from personalization.events import validate_records
from personalization.features import FEATURE_NAMES
from rerank.pipeline import SearchPipeline
from retrieval.retriever import Retriever
from retrieval.store import IndexLocation
from shopsearch.service import ServiceSettings, create_app

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-api-key"
ADMIN_KEY = "test-admin-key"
ALICE = "alice@example.com"
DANA = "dana.q7@example.com"


def _ts(day: int) -> str:
    return datetime(2026, 1, day, 12, tzinfo=timezone.utc).isoformat()


def _purchases(products: list[str], user: str = ALICE) -> list[dict]:
    return [
        {
            "user_id": user,
            "timestamp": _ts(1 + i),
            "session_id": "s1",
            "event": "purchase",
            "product_id": p,
            "position": 1,
        }
        for i, p in enumerate(products)
    ]


# -- search ----------------------------------------------------------------------------------


def test_search_get_and_post_answer_ranked_products_with_score_parts(make_client):
    client = make_client()
    got = client.get(
        "/search", params={"q": "cordless drill", "k": 10}, headers={"X-Request-ID": "r-1"}
    )
    assert got.status_code == 200, got.text
    assert got.headers["x-request-id"] == "r-1"
    data = got.json()
    assert len(data["results"]) == 10 and len(data["search_id"]) == 32
    first = data["results"][0]
    assert first["rank"] == 1 and first["product"]["title"]
    assert set(first["scores"]) >= {"retrieval", "relevance", "personal"}
    assert {"profile", "retrieve", "rerank", "personal"} <= set(data["stage_ms"])
    assert data["personalized"] is False and first["because"] is None
    posted = client.post("/search", json={"q": "cordless drill", "k": 10}).json()
    assert [r["product_id"] for r in posted["results"]] == [
        r["product_id"] for r in data["results"]
    ]
    assert posted["search_id"] != data["search_id"]
    # paging: the second page of 5 is ranks 6..10 of the same ranking
    page = client.get("/search", params={"q": "cordless drill", "k": 5, "offset": 5}).json()
    assert [r["product_id"] for r in page["results"]] == [
        r["product_id"] for r in data["results"][5:]
    ]
    assert [r["rank"] for r in page["results"]] == [6, 7, 8, 9, 10]


def test_rerank_depth_is_a_setting_never_below_the_page(make_client, monkeypatch):
    depths = []
    real = SearchPipeline.search

    def spy(self, *args, **kwargs):
        depths.append(kwargs["rerank_depth"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SearchPipeline, "search", spy)
    for setting, k, offset, want in ((None, 10, 0, 50), (20, 10, 0, 20), (20, 10, 15, 25)):
        client = make_client(rerank_depth=setting)
        got = client.get("/search", params={"q": "drill", "k": k, "offset": offset})
        assert got.status_code == 200, got.text
        assert depths[-1] == want
    with pytest.raises(ShopsearchError, match="rerank_depth"):
        ServiceSettings(index="x", rerank_depth=0)


def test_search_filters(make_client, sample_products):
    client = make_client()
    top = sorted({p.category.split(" > ")[0] for p in sample_products if p.category})[0]
    data = client.post(
        "/search", json={"q": "tool", "k": 20, "category": top, "max_price": 500, "in_stock": True}
    ).json()
    assert data["results"]
    for r in data["results"]:
        assert r["product"]["category"].startswith(top)
        assert r["product"]["price"] <= 500 and r["product"]["in_stock"] is True
    brand = next(p.brand for p in sample_products if p.brand)
    got = client.get("/search", params=[("q", "tool"), ("brands", brand), ("k", 5)]).json()
    assert got["results"] and {r["product"]["brand"] for r in got["results"]} == {brand}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"k": 0}, "k"),
        ({"k": 101}, "k"),
        ({"offset": -1}, "offset"),
        ({"min_price": -5}, "min_price"),
        ({"in_stock": "maybe"}, "in_stock"),
        ({"mode": "magic"}, "mode"),
        ({"q": "x" * 513}, "q"),
        ({"q": ""}, "q"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_fields_are_422_naming_the_field(make_client, params, field):
    client = make_client()
    for response in (
        client.get("/search", params={"q": "drill", **params}),
        client.post("/search", json={"q": "drill", **params}),
    ):
        assert response.status_code == 422, response.text
        body = response.json()
        assert field in body["message"] and "\n" not in body["message"]
        assert any(field in map(str, e["loc"]) for e in body["detail"])


def test_user_mistakes_are_400_with_one_line(make_client):
    client = make_client()
    blank = client.get("/search", params={"q": "   "})
    assert blank.status_code == 400 and "empty" in blank.json()["detail"]
    prices = client.post("/search", json={"q": "drill", "min_price": 50, "max_price": 10})
    assert prices.status_code == 400 and "min_price" in prices.json()["detail"]
    deep = client.get("/search", params={"q": "drill", "k": 100, "offset": 950})
    assert deep.status_code == 422 and "offset + k must be at most 1000" in deep.json()["message"]
    assert (
        client.post(
            "/search", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )


def test_body_and_query_size_are_bounded(make_client):
    client = make_client(max_body_bytes=4096)
    big = {"events": [{"user_id": "u", "event": "search", "query": "x" * 100}] * 100}
    response = client.post("/events", json=big)
    assert response.status_code == 413 and "larger than 4096" in response.json()["detail"]
    # chunked (no content-length): still bounded
    chunks = (b"x" * 1024 for _ in range(8))
    response = client.post("/search", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413


# -- keys ------------------------------------------------------------------------------------


def test_api_key_guards_everything_but_health(make_client):
    client = make_client(api_key=API_KEY)
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    for method, path, kwargs in [
        ("get", "/search", {"params": {"q": "drill"}}),
        ("post", "/search", {"json": {"q": "drill"}}),
        ("post", "/events", {"json": {"events": []}}),
        ("get", "/metrics", {}),
    ]:
        assert getattr(client, method)(path, **kwargs).status_code == 401, path
        wrong = getattr(client, method)(path, headers={"X-API-Key": "nope"}, **kwargs)
        assert wrong.status_code == 401, path
        right = getattr(client, method)(path, headers={"X-API-Key": API_KEY}, **kwargs)
        assert right.status_code == 200, (path, right.text)
    # the page and the docs are static (no data): the page asks for the key itself
    assert client.get("/").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_forget_and_reload_need_the_admin_key(make_client):
    off = make_client()
    assert off.delete(f"/users/{ALICE}").status_code == 403
    assert "SHOPSEARCH_ADMIN_KEY" in off.post("/admin/reload").json()["detail"]
    client = make_client(api_key=API_KEY, admin_key=ADMIN_KEY)
    user = {"X-API-Key": API_KEY}
    assert client.delete(f"/users/{ALICE}", headers=user).status_code == 403
    assert (
        client.delete(f"/users/{ALICE}", headers={**user, "X-Admin-Key": API_KEY}).status_code
        == 403
    )
    # the admin key alone does not pass the API key check
    assert client.delete(f"/users/{ALICE}", headers={"X-Admin-Key": ADMIN_KEY}).status_code == 401
    ok = client.delete(f"/users/{ALICE}", headers={**user, "X-Admin-Key": ADMIN_KEY})
    assert ok.status_code == 200 and ok.json() == {"removed": 0}


# -- events, personalization, forgetting ------------------------------------------------------


def test_validate_records_uses_the_event_log_rules(drills):
    good = _purchases(drills[:1])[0]
    batch = validate_records(
        [good, {**good, "event": "teleport"}, "nope", {**good, "timestamp": "yesterday"}],
        known_products={drills[0]},
    )
    assert len(batch.events) == 1 and batch.events[0].product_id == drills[0]
    assert [(r.line, r.reason.split(" ")[0]) for r in batch.rejects] == [
        (1, "unknown"),
        (2, "event"),
        (3, "bad"),
    ]


def test_events_apply_at_once_bad_ones_reported_and_forget(make_client, drills, caplog):
    client = make_client(admin_key=ADMIN_KEY)
    query = {"q": "cordless drill", "k": 10, "user_id": ALICE, "explain": True}
    anonymous = client.post("/search", json={"q": "cordless drill", "k": 10}).json()
    cold = client.post("/search", json=query).json()
    assert [r["product_id"] for r in cold["results"]] == [
        r["product_id"] for r in anonymous["results"]
    ]
    assert not cold["personalized"]

    events = [
        *_purchases(drills),
        {"user_id": "bob", "timestamp": _ts(2), "event": "teleport", "product_id": drills[0]},
        {"user_id": "bob", "timestamp": _ts(2), "event": "click", "product_id": "NO-SUCH-SKU"},
        {"user_id": "bob", "timestamp": "yesterday", "event": "click", "product_id": drills[0]},
        42,
        {"user_id": "bob", "timestamp": _ts(3), "event": "search", "query": "hammer"},
    ]
    with caplog.at_level(logging.INFO, logger="shopsearch.service.access"):
        response = client.post("/events", json={"events": events})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["accepted"] == 4 and body["added"] == 4 and body["duplicates"] == 0
        assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
            (
                3,
                "unknown event type 'teleport' (expected one of search, view, click, add_to_cart, purchase)",
            ),
            (4, "unknown product_id"),
            (5, body["rejected"][2]["reason"]),
            (6, "event is not a JSON object"),
        ]
        assert "yesterday" in body["rejected"][2]["reason"]
        again = client.post("/events", json={"events": events[:3]}).json()
        assert again["added"] == 0 and again["duplicates"] == 3

        # the very next search of that shopper uses them
        warm = client.post("/search", json=query).json()
        assert warm["personalized"]
        assert any(r["scores"]["personal"] != 0.0 for r in warm["results"])
        assert any(r["because"] for r in warm["results"])
        reason = next(r["because"][0] for r in warm["results"] if r["because"])
        assert reason["feature"] in FEATURE_NAMES

        forgot = client.delete(f"/users/{ALICE}", headers={"X-Admin-Key": ADMIN_KEY})
        # ids with a slash are ids too
        assert client.delete("/users/a/b", headers={"X-Admin-Key": ADMIN_KEY}).status_code == 200
        assert forgot.status_code == 200 and forgot.json() == {"removed": 3}
        after = client.post("/search", json=query).json()
        assert not after["personalized"]
        assert [r["product_id"] for r in after["results"]] == [
            r["product_id"] for r in anonymous["results"]
        ]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith("access")]
    assert lines and all(ALICE not in json.dumps(line) for line in lines)
    search_line = next(line for line in lines if line["endpoint"] == "/search" and "user" in line)
    assert len(search_line["user"]) == 32 and search_line["status"] == 200
    assert {"request_id", "latency_ms", "stage_ms", "search_id"} <= set(search_line)
    assert any(line["endpoint"] == "/users/{user_id:path}" for line in lines)


def test_events_without_profiles_is_409(make_client):
    client = make_client(profiles=None, personal=None)
    response = client.post("/events", json={"events": []})
    assert response.status_code == 409 and "--profiles" in response.json()["detail"]
    assert client.post("/events", json={"events": {"a": 1}}).status_code == 422


# -- operations ------------------------------------------------------------------------------


def test_health_readiness_metrics_and_openapi(make_client):
    client = make_client()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] and ready["generation"] == 1 and ready["index"]["build_id"]
    client.get("/search", params={"q": "drill"})
    client.get("/search", params={"q": "drill", "k": 0})
    text = client.get("/metrics").text
    assert 'shopsearch_http_request_duration_seconds_bucket{endpoint="/search"' in text
    assert 'shopsearch_search_stage_duration_seconds_bucket{le="0.005",stage="retrieve"}' in text
    for stage in ("profile", "rerank", "personal"):
        assert f'stage="{stage}"' in text
    assert (
        'shopsearch_http_requests_total{endpoint="/search",method="GET",status="422"} 1.0' in text
    )
    assert 'shopsearch_http_errors_total{endpoint="/search",kind="client"} 1.0' in text
    schema = client.get("/openapi.json").json()
    assert {"/search", "/events", "/users/{user_id}", "/admin/reload", "/metrics"} <= set(
        schema["paths"]
    )
    get_params = {p["name"] for p in schema["paths"]["/search"]["get"]["parameters"]}
    assert {"q", "k", "offset", "category", "brands", "user_id", "explain"} <= get_params
    assert {"SearchParams", "SearchResponse", "EventsRequest"} <= set(
        schema["components"]["schemas"]
    )
    assert "api_key" in schema["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200


def test_readyz_is_503_until_loaded(index_dir, tiny_encoder):
    gate = threading.Event()

    def slow(settings):
        gate.wait(10)
        return SearchPipeline(Retriever.open(settings.index, encoder=tiny_encoder))

    settings = ServiceSettings(index=str(index_dir), load_wait_s=0.1)
    app = create_app(settings, pipeline_factory=slow)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        busy = client.get("/search", params={"q": "drill"})
        assert busy.status_code == 503 and busy.headers["retry-after"]
        gate.set()
        for _ in range(100):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        assert client.get("/search", params={"q": "drill"}).status_code == 200


def test_a_broken_index_is_reported_by_readyz(tmp_path):
    app = create_app(ServiceSettings(index=str(tmp_path / "nothing"), background_load=False))
    with TestClient(app) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["detail"]
        assert client.get("/search", params={"q": "drill"}).status_code == 503


def test_reload_swaps_models_without_a_failed_request(make_client, drills, personal_model):
    client = make_client(personal=None, admin_key=ADMIN_KEY)
    admin = {"X-Admin-Key": ADMIN_KEY}
    assert client.post("/events", json={"events": _purchases(drills)}).json()["added"] == 3
    query = {"q": "cordless drill", "k": 10, "user_id": ALICE}
    assert not client.post("/search", json=query).json()["personalized"]  # no model yet

    statuses: list[int] = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            statuses.append(client.post("/search", json=query).status_code)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        time.sleep(0.2)
        reloaded = client.post(
            "/admin/reload", json={"personal": str(personal_model)}, headers=admin
        )
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["generation"] == 2 and reloaded.json()["models"]["personal"]
    assert statuses and set(statuses) == {200}
    assert client.post("/search", json=query).json()["personalized"]
    bad = client.post("/admin/reload", json={"personal": "/no/such/model"}, headers=admin)
    assert bad.status_code == 400 and "still serving" in bad.json()["detail"]
    assert client.get("/readyz").json()["generation"] == 2
    assert client.post("/search", json=query).json()["personalized"]


def test_a_new_index_build_is_served_without_a_restart(
    tmp_path, sample_catalog, sample_products, tiny_encoder
):
    import polars as pl

    index = tmp_path / "index"
    location = IndexLocation(path=index)
    index_catalog(sample_catalog, location, encoder=tiny_encoder, progress=False)

    def factory(settings):
        return SearchPipeline(Retriever.open(settings.index, encoder=tiny_encoder))

    settings = ServiceSettings(index=str(index), background_load=False)
    with TestClient(create_app(settings, pipeline_factory=factory)) as client:
        before = client.get("/readyz").json()["index"]["build_id"]
        gone = sample_products[0].product_id
        title = {"q": sample_products[0].title, "k": 50}
        found = client.get("/search", params=title).json()["results"]
        assert gone in {r["product_id"] for r in found}
        smaller = tmp_path / "smaller.parquet"
        pl.read_parquet(sample_catalog).filter(pl.col("product_id") != gone).write_parquet(smaller)
        index_catalog(
            smaller, location, encoder=tiny_encoder, progress=False, rejects_path=tmp_path / "r"
        )
        # the retriever looks for a new build at most once a second and opens it in the
        # background: searches are answered from the old one until it is swapped in
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["index"]["build_id"] == before:
            assert time.monotonic() < deadline, "the new build was never served"
            assert client.get("/search", params=title).status_code == 200
            time.sleep(0.2)
        hits = client.get("/search", params=title).json()
        assert hits["results"] and gone not in {r["product_id"] for r in hits["results"]}


def test_every_worker_follows_a_reload(make_client, tmp_path, personal_model):
    state = str(tmp_path / "state")
    os.makedirs(state)
    one = make_client(personal=None, admin_key=ADMIN_KEY, state_dir=state)
    two = make_client(personal=None, admin_key=ADMIN_KEY, state_dir=state)
    reloaded = one.post(
        "/admin/reload", json={"personal": str(personal_model)}, headers={"X-Admin-Key": ADMIN_KEY}
    )
    assert reloaded.status_code == 200
    runtime = two.app.state.runtime
    runtime._followed_at = 0.0  # do not wait out the once-a-second check
    assert two.get("/search", params={"q": "drill"}).status_code == 200  # sees the announcement
    for _ in range(200):
        if two.get("/readyz").json()["generation"] == 2:
            break
        time.sleep(0.05)
    ready = two.get("/readyz").json()
    assert ready["generation"] == 2 and ready["models"]["personal"] == str(personal_model)
    # a worker started after the reload (uvicorn replaces one that died) starts with it
    late = make_client(personal=None, admin_key=ADMIN_KEY, state_dir=state)
    assert late.get("/readyz").json()["models"]["personal"] == str(personal_model)


# -- the page --------------------------------------------------------------------------------


def test_page_and_its_script(make_client):
    client = make_client()
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for needle in ('id="q"', 'id="category"', 'id="brand"', 'id="min_price"', 'id="user_id"'):
        assert needle in html
    assert '<script src="static/app.js"></script>' in html
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    js = script.text
    assert 'const SEARCH_PATH = "search";' in js
    assert 'fetch(SEARCH_PATH, { method: "POST"' in js
    assert "X-API-Key" in js
    # the path the page fetches (relative to /) is the POST search endpoint
    assert "post" in client.app.openapi()["paths"]["/search"]
    for field in ("relevance", "personal", "price", "brand", "category"):
        assert field in js


# -- the command -----------------------------------------------------------------------------


@pytest.fixture()
def no_uvicorn(monkeypatch):
    """Runs ``serve`` without a server: records what uvicorn.run got; restores the env."""
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append((a, kw, dict(os.environ))))
    saved = dict(os.environ)
    yield calls
    os.environ.clear()
    os.environ.update(saved)


def test_serve_command_options_and_warning(index_dir, no_uvicorn, monkeypatch):
    from shopsearch.cli.serve import serve

    assert all(p.help for p in serve.params if isinstance(p, click.Option)), "an option lacks help"
    monkeypatch.delenv("SHOPSEARCH_API_KEY", raising=False)
    monkeypatch.delenv("SHOPSEARCH_THREADS", raising=False)
    runner = CliRunner()
    result = runner.invoke(serve, ["--index", str(index_dir), "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert "warning: listening on 0.0.0.0 without an API key" in result.stderr
    (args, kwargs, env) = no_uvicorn[-1]
    assert args == ("shopsearch.service.main:create_app_from_env",) and kwargs["factory"]
    assert kwargs["access_log"] is False and kwargs["workers"] == 1
    settings = ServiceSettings.from_env(env)
    assert settings.index == str(index_dir.resolve()) and settings.api_key is None

    monkeypatch.setenv("SHOPSEARCH_API_KEY", API_KEY)
    result = runner.invoke(
        serve, ["--index", str(index_dir), "--host", "0.0.0.0", "--workers", "3"]
    )
    assert result.exit_code == 0 and "warning" not in result.stderr
    (args, kwargs, env) = no_uvicorn[-1]
    assert kwargs["workers"] == 3 and env["PROMETHEUS_MULTIPROC_DIR"]
    # every setting travels in its own SHOPSEARCH_* variable (no JSON blob)
    assert "SHOPSEARCH_SERVE_SETTINGS" not in env and env["SHOPSEARCH_API_KEY"] == API_KEY
    assert ServiceSettings.from_env(env).secret("api_key") == API_KEY
    # the workers share the cores: each runs cores/3 inference threads (at least 1)
    from inference.backend import cpu_threads

    assert env["SHOPSEARCH_THREADS"] == str(max(1, cpu_threads() // 3))
    os.environ.pop("SHOPSEARCH_THREADS", None)
    result = runner.invoke(serve, ["--index", str(index_dir), "--workers", "2", "--threads", "5"])
    assert result.exit_code == 0 and no_uvicorn[-1][2]["SHOPSEARCH_THREADS"] == "5"
    assert ServiceSettings.from_env(no_uvicorn[-1][2]).rerank_depth is None
    result = runner.invoke(
        serve, ["--index", str(index_dir)], env={"SHOPSEARCH_RERANK_DEPTH": "20"}
    )
    assert result.exit_code == 0 and ServiceSettings.from_env(no_uvicorn[-1][2]).rerank_depth == 20
    os.environ.pop("SHOPSEARCH_THREADS", None)
    # loopback is not warned about, even without a key
    monkeypatch.delenv("SHOPSEARCH_API_KEY")
    result = runner.invoke(serve, ["--index", str(index_dir)])
    assert result.exit_code == 0 and "warning" not in result.stderr


def test_serve_command_user_mistakes(index_dir, tmp_path, no_uvicorn, monkeypatch):
    from core.errors import ShopsearchError
    from shopsearch.cli.serve import serve

    monkeypatch.delenv("SHOPSEARCH_QDRANT_URL", raising=False)
    runner = CliRunner()
    both = runner.invoke(serve, ["--index", str(index_dir), "--qdrant-url", "http://x:6333"])
    assert isinstance(both.exception, ShopsearchError) and "Only one of" in str(both.exception)
    neither = runner.invoke(serve, [])
    assert isinstance(neither.exception, ShopsearchError) and "--index" in str(neither.exception)
    lone = runner.invoke(serve, ["--index", str(index_dir), "--personal", str(tmp_path)])
    assert isinstance(lone.exception, ShopsearchError) and "--profiles" in str(lone.exception)
    missing = runner.invoke(serve, ["--index", str(tmp_path / "nope")])
    assert isinstance(missing.exception, ShopsearchError) and "no such directory" in str(
        missing.exception
    )
    assert not no_uvicorn


# -- a real server ---------------------------------------------------------------------------


@pytest.mark.integration
def test_real_server_searches_over_http(server, drills):
    url, log = server
    with httpx.Client(base_url=url, timeout=30) as http:
        # both workers answer (a request to one still loading waits for it)
        for _ in range(8):
            got = http.get("/search", params={"q": "cordless drill", "k": 5})
            assert got.status_code == 200, got.text
            assert len(got.json()["results"]) == 5
        # events sent to one worker are in the store every worker reads (SQLite, WAL)
        sent = http.post("/events", json={"events": _purchases(drills, user=DANA)})
        assert sent.status_code == 200 and sent.json()["added"] == 3
        for _ in range(6):
            warm = http.post("/search", json={"q": "cordless drill", "k": 5, "user_id": DANA})
            assert warm.status_code == 200 and warm.json()["personalized"]
        metrics = http.get("/metrics").text
        # summed over the workers
        assert (
            'shopsearch_http_requests_total{endpoint="/search",method="GET",status="200"} 8.0'
            in metrics
        )
        assert 'shopsearch_events_total{outcome="added"} 3.0' in metrics
        assert "shopsearch_search_stage_duration_seconds_bucket" in metrics
    lines = [
        json.loads(line)
        for line in log.read_text().splitlines()
        if line.startswith("{") and '"endpoint"' in line
    ]
    assert any(line["endpoint"] == "/search" and line["status"] == 200 for line in lines)
    assert any(line.get("user") for line in lines) and DANA not in log.read_text()
