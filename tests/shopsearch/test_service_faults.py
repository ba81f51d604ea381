"""The service's faults of issue 26, each as the kind it is: a request keeps what it uses until it
is done (reloads), the service recovers by itself, a server-side condition is a retryable 503,
nothing valid is dropped silently, what the library knows reaches the response, a JSON body is
taken as JSON, a security setting never fails open, and the open endpoints say no more than a
probe needs. Every fixture here is built by the tests (nothing read from shared/)."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

import personalization.ingest as ingest_module
import personalization.profiles as profiles_module
from core.errors import ShopsearchError
from indexer.build import index_catalog
from personalization.ingest import ingest_event_log
from retrieval.store import IndexLocation
from shopsearch.service import ServiceSettings, create_app
from shopsearch.service import runtime as runtime_module

API_KEY = "test-api-key"
ADMIN_KEY = "test-admin-key"
KEYS = {"X-API-Key": API_KEY, "X-Admin-Key": ADMIN_KEY}


def _events(products: list[str], user: str = "pat@example.com", day: int = 1) -> list[dict]:
    return [
        {
            "user_id": user,
            "timestamp": datetime(2026, 1, day, 12, i, tzinfo=timezone.utc).isoformat(),
            "session_id": f"s{day}",
            "event": kind,
            "product_id": p,
            "position": 1,
        }
        for i, (kind, p) in enumerate(zip(("view", "click", "add_to_cart"), products, strict=False))
    ]


def _no_paths(text: str, *paths: Path) -> None:
    for path in paths:
        assert str(path) not in text, text
    assert "/tmp" not in text and "pytest-of" not in text, text


# -- a request holds what it uses until it is done -------------------------------------------


def test_a_reload_waits_for_the_requests_in_flight_to_close_their_generation(
    make_client, drills, monkeypatch
):
    client = make_client(personal=None, api_key=API_KEY, admin_key=ADMIN_KEY)
    runtime = client.app.state.runtime
    inside, release = threading.Event(), threading.Event()
    real = ingest_module.ingest_events

    def slow_ingest(*args, **kwargs):
        inside.set()  # the request has pinned generation 1 and is about to store
        assert release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "ingest_events", slow_ingest)
    answers: dict[str, object] = {}

    def post():
        answers["events"] = client.post("/events", json={"events": _events(drills)}, headers=KEYS)

    thread = threading.Thread(target=post)
    thread.start()
    assert inside.wait(10)
    first = runtime.current
    reloaded = client.post("/admin/reload", headers=KEYS)  # does not wait for the request
    assert reloaded.status_code == 200 and reloaded.json()["generation"] == 2
    assert runtime.current is not first and not first.closed and first.users == 1
    release.set()
    thread.join(20)
    response = answers["events"]
    assert response.status_code == 200, response.text
    assert response.json()["added"] == 3
    assert first.closed and first.users == 0  # closed by its last request
    # stored for real: the erasure finds them (on the new generation's store)
    forgot = client.delete("/users/pat@example.com", headers=KEYS)
    assert forgot.status_code == 200 and forgot.json() == {"removed": 3}


def test_events_and_erasures_racing_reloads_never_fail(make_client, drills):
    client = make_client(personal=None, api_key=API_KEY, admin_key=ADMIN_KEY)
    statuses: list[int] = []
    stop = threading.Event()

    def hammer(name: str):
        n = 0
        while not stop.is_set():
            n += 1
            user = f"{name}-{n}"
            got = client.post("/events", json={"events": _events(drills, user)}, headers=KEYS)
            statuses.append(got.status_code)
            statuses.append(client.delete(f"/users/{user}", headers=KEYS).status_code)
            statuses.append(client.get("/search", params={"q": "drill"}, headers=KEYS).status_code)

    threads = [threading.Thread(target=hammer, args=(f"u{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(4):
            time.sleep(0.15)
            assert client.post("/admin/reload", headers=KEYS).status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert statuses and set(statuses) == {200}


# -- the service recovers by itself ----------------------------------------------------------


@pytest.fixture()
def quick_recovery(monkeypatch):
    monkeypatch.setattr(runtime_module, "RECOVER_CHECK_S", 0.1)


def _wait_ready(client: TestClient, seconds: float = 30, headers=None) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = client.get("/readyz", headers=headers or {})
        if got.status_code == 200:
            return got.json()
        time.sleep(0.1)
    pytest.fail(f"not ready after {seconds} s: {got.text}")


def test_a_service_started_before_its_index_comes_up_when_it_is_built(
    tmp_path, sample_catalog, tiny_encoder, tiny_factory, quick_recovery
):
    index = tmp_path / "idx"
    index.mkdir()
    settings = ServiceSettings(index=str(index), background_load=False, load_wait_s=0.1)
    with TestClient(create_app(settings, pipeline_factory=tiny_factory)) as client:
        waiting = client.get("/readyz")
        assert waiting.status_code == 503 and waiting.json()["detail"].startswith("failed")
        busy = client.get("/search", params={"q": "drill"})
        assert busy.status_code == 503 and busy.headers["retry-after"]
        assert "no shopsearch index" in busy.json()["detail"]
        _no_paths(busy.text + waiting.text, index)
        index_catalog(
            sample_catalog, IndexLocation(path=index), encoder=tiny_encoder, progress=False
        )
        ready = _wait_ready(client)
        assert ready["generation"] == 1 and ready["index"]["build_id"]
        assert client.get("/search", params={"q": "drill"}).status_code == 200


def test_a_model_folder_that_appears_later_is_loaded_by_itself(
    tmp_path, index_dir, personal_model, tiny_factory, quick_recovery
):
    folder = tmp_path / "personal-v2"
    folder.mkdir()  # the deployment made the folder; the copy has not arrived yet
    settings = ServiceSettings(
        index=str(index_dir),
        personal=str(folder),
        profiles=str(tmp_path / "profiles"),
        background_load=False,
        load_wait_s=0.1,
    )
    with TestClient(create_app(settings, pipeline_factory=tiny_factory)) as client:
        assert client.get("/readyz").status_code == 503
        shutil.copytree(personal_model, folder, dirs_exist_ok=True)
        ready = _wait_ready(client)
        assert ready["models"]["personal"] == str(folder)


def test_an_index_removed_and_rebuilt_is_served_throughout(
    tmp_path, sample_catalog, tiny_encoder, tiny_factory
):
    index = tmp_path / "idx"
    location = IndexLocation(path=index)
    index_catalog(sample_catalog, location, encoder=tiny_encoder, progress=False)
    settings = ServiceSettings(index=str(index), background_load=False)
    app = create_app(settings, pipeline_factory=tiny_factory)
    with TestClient(app, raise_server_exceptions=False) as client:
        before = client.get("/readyz").json()["index"]["build_id"]
        shutil.rmtree(index)
        time.sleep(1.1)  # the retriever looks for a new build at most once a second
        # the open build keeps answering (or a retryable 503): never a 4xx or a 500
        assert client.get("/search", params={"q": "drill"}).status_code in (200, 503)
        index_catalog(sample_catalog, location, encoder=tiny_encoder, progress=False)
        deadline = time.monotonic() + 30  # the new build is opened in the background
        while client.get("/readyz").json()["index"]["build_id"] == before:
            assert time.monotonic() < deadline, "the rebuilt index was never served"
            assert client.get("/search", params={"q": "drill"}).status_code == 200
            time.sleep(0.2)


# -- a server-side condition is a retryable 503, never a 4xx, never a path ----------------------


def test_an_erasure_held_up_by_a_reader_is_a_503_to_retry(make_client, drills, monkeypatch):
    monkeypatch.setattr(profiles_module, "CHECKPOINT_WAIT_S", 0.2)
    client = make_client(personal=None, admin_key=ADMIN_KEY)
    profiles = Path(client.app.state.settings.profiles)
    assert client.post("/events", json={"events": _events(drills, "carol")}).status_code == 200
    client.app.state.runtime.current.store._conn.execute("PRAGMA busy_timeout = 100")
    reader = sqlite3.connect(profiles / "profiles.sqlite")
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()
        held = client.delete("/users/carol", headers={"X-Admin-Key": ADMIN_KEY})
        assert held.status_code == 503, held.text
        assert int(held.headers["retry-after"]) > 0
        detail = held.json()["detail"]
        assert "another process is reading the profile store" in detail and "again" in detail
        assert "forget-user" not in detail
        _no_paths(held.text, profiles)
    finally:
        reader.rollback()
        reader.close()
    again = client.delete("/users/carol", headers={"X-Admin-Key": ADMIN_KEY})
    assert again.status_code == 200 and again.json() == {"removed": 0}


def test_a_busy_profile_store_is_a_503_not_a_400(make_client, drills):
    client = make_client(personal=None)
    runtime = client.app.state.runtime
    profiles = Path(client.app.state.settings.profiles)
    runtime.current.store._conn.execute("PRAGMA busy_timeout = 100")  # do not wait 10 s
    writer = sqlite3.connect(profiles / "profiles.sqlite", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # another process writing
        busy = client.post("/events", json={"events": _events(drills, "dave")})
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert busy.status_code == 503 and busy.headers["retry-after"], busy.text
    assert "retry" in busy.json()["detail"]
    _no_paths(busy.text, profiles)
    assert client.post("/events", json={"events": _events(drills, "dave")}).status_code == 200


def test_only_the_users_mistakes_are_4xx_a_bug_is_a_logged_500(
    make_client, monkeypatch, caplog, index_dir
):
    from rerank.pipeline import SearchPipeline

    client = make_client(raise_server_exceptions=False)

    def damaged(self, *args, **kwargs):
        raise ShopsearchError(f"the index at {index_dir} is damaged (a segment is missing)")

    monkeypatch.setattr(SearchPipeline, "search", damaged)
    got = client.get("/search", params={"q": "drill"})
    assert got.status_code == 503 and got.headers["retry-after"]
    assert "damaged" in got.json()["detail"]
    _no_paths(got.text, index_dir)

    def bug(self, *args, **kwargs):
        raise ValueError(f"could not convert {index_dir}/x to float")  # a bug, not the user's

    monkeypatch.setattr(SearchPipeline, "search", bug)
    with caplog.at_level(logging.ERROR, logger="shopsearch.service"):
        got = client.get("/search", params={"q": "drill"}, headers={"X-Request-ID": "bug-1"})
    assert got.status_code == 500 and "bug-1" in got.json()["detail"]
    _no_paths(got.text, index_dir)
    logged = [r for r in caplog.records if r.name == "shopsearch.service" and r.exc_info]
    assert logged and "bug-1" in logged[0].getMessage()
    assert "ValueError" in caplog.text  # the traceback is in the log
    # and the next request is served as usual (the connection is not dropped)
    assert client.get("/healthz").status_code == 200


# -- nothing valid is dropped silently -------------------------------------------------------


def test_events_of_a_forgotten_shopper_are_counted_and_said(
    make_client, drills, caplog, tmp_path, index_dir
):
    client = make_client(personal=None, admin_key=ADMIN_KEY)
    admin = {"X-Admin-Key": ADMIN_KEY}
    first = client.post("/events", json={"events": _events(drills)}).json()
    assert first["accepted"] == first["added"] == 3 and first["forgotten"] == 0
    assert first["notes"] == []
    assert client.delete("/users/pat@example.com", headers=admin).json() == {"removed": 3}
    with caplog.at_level(logging.INFO, logger="shopsearch.service.access"):
        back = client.post("/events", json={"events": _events(drills, day=20)})
    body = back.json()
    assert back.status_code == 200
    assert body["forgotten"] == 3 and body["accepted"] == 0 and body["added"] == 0
    assert body["rejected"] == [] and "forgotten" in body["notes"][0]
    line = json.loads([r.getMessage() for r in caplog.records if "/events" in r.getMessage()][-1])
    assert line["events"]["forgotten"] == 3
    metrics = client.get("/metrics").text
    assert 'shopsearch_events_total{outcome="forgotten"} 3.0' in metrics
    assert client.delete("/users/pat@example.com", headers=admin).json() == {"removed": 0}
    # the same events through the one ingest path from a file say the same
    log = tmp_path / "back.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in _events(drills, day=21)))
    profiles = client.app.state.settings.profiles
    summary = ingest_event_log(log, profiles, IndexLocation(path=index_dir))
    assert summary.forgotten == 3 and summary.added == 0


# -- what the library knows about a result reaches the response ---------------------------------


def test_an_empty_filtered_page_says_which_filter_matches_nothing(make_client):
    client = make_client()
    brand = client.get("/search", params={"q": "drill", "brands": "Nosuchbrand"}).json()
    assert brand["results"] == [] and brand["note"] == "no product has brand 'Nosuchbrand'"
    category = client.post("/search", json={"q": "drill", "category": "Garden > Nowhere"}).json()
    assert category["results"] == [] and "category 'Garden > Nowhere'" in category["note"]
    plain = client.get("/search", params={"q": "drill"}).json()
    assert plain["results"] and plain["note"] is None
    js = client.get("/static/app.js").text
    assert "data.note" in js and 'id="note"' in client.get("/").text


# -- a JSON body is taken as JSON; what is not JSON is named -----------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "text/plain;charset=UTF-8", "application/x-www-form-urlencoded"]
)
def test_a_json_body_without_the_json_type_is_accepted(make_client, drills, content_type):
    client = make_client()
    headers = {"content-type": content_type} if content_type else {}
    body = json.dumps({"q": "drill", "k": 1}).encode()
    got = client.post("/search", content=body, headers=headers)
    assert got.status_code == 200, got.text
    assert len(got.json()["results"]) == 1
    events = json.dumps({"events": _events(drills[:1], "erin")}).encode()
    assert client.post("/events", content=events, headers=headers).json()["added"] == 1


def test_a_body_that_is_not_json_is_a_415_that_says_so(make_client):
    client = make_client()
    form = client.post("/search", data={"q": "drill"})  # a real form
    assert form.status_code == 415, form.text
    assert "Content-Type: application/json" in form.json()["detail"]
    text = client.post("/search", content=b"drill please", headers={"content-type": "text/plain"})
    assert text.status_code == 415 and "text/plain" in text.json()["detail"]
    # declared JSON but broken: a 422 about the JSON, as before
    broken = client.post(
        "/search", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422


# -- a security setting never fails open ------------------------------------------------------


@pytest.mark.parametrize("name", ["api_key", "admin_key"])
@pytest.mark.parametrize("value", ["", "   ", " key-with-spaces ", "tab\tkey"])
def test_a_key_that_is_set_but_unusable_is_refused(name, value):
    with pytest.raises(ShopsearchError, match=f"SHOPSEARCH_{name.upper()}"):
        ServiceSettings(index="x", **{name: value})
    with pytest.raises(ShopsearchError, match=f"SHOPSEARCH_{name.upper()}"):
        ServiceSettings.from_env({"SHOPSEARCH_INDEX": "x", f"SHOPSEARCH_{name.upper()}": value})


def test_a_blank_qdrant_key_is_no_key():
    # the key the service sends to a server guards nothing here: blank is none (fails closed)
    assert ServiceSettings(index="x", qdrant_api_key="  ").qdrant_api_key is None


def test_serve_refuses_to_start_with_a_blank_key(index_dir, monkeypatch):
    import uvicorn

    from shopsearch.cli import main

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: started.append(a))
    for var, value in (("SHOPSEARCH_API_KEY", "   "), ("SHOPSEARCH_ADMIN_KEY", "")):
        result = CliRunner().invoke(main, ["serve", "--index", str(index_dir)], env={var: value})
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{var} is set but blank" in lines[0]
    assert not started


# -- the open endpoints say no more than a probe needs -----------------------------------------


def test_readyz_without_the_key_says_ready_and_nothing_more(make_client, personal_model):
    client = make_client(api_key=API_KEY)
    anonymous = client.get("/readyz")
    assert anonymous.status_code == 200 and anonymous.json() == {"ready": True}
    keyed = client.get("/readyz", headers={"X-API-Key": API_KEY}).json()
    assert keyed["generation"] == 1 and keyed["models"]["personal"] == str(personal_model)
    wrong = client.get("/readyz", headers={"X-API-Key": "nope"})
    assert wrong.json() == {"ready": True}


def test_readyz_of_a_failed_load_hides_the_reason_from_anonymous_callers(
    tmp_path, index_dir, tiny_factory
):
    folder = tmp_path / "srv" / "reranker-v2"
    folder.mkdir(parents=True)

    def factory(settings):
        from rerank.cross_encoder import Reranker

        Reranker.load(settings.reranker)  # an empty folder: not a cross-encoder
        return tiny_factory(settings)

    settings = ServiceSettings(
        index=str(index_dir), reranker=str(folder), api_key=API_KEY, background_load=False
    )
    with TestClient(create_app(settings, pipeline_factory=factory)) as client:
        anonymous = client.get("/readyz")
        assert anonymous.status_code == 503
        assert anonymous.json() == {"ready": False, "detail": "failed"}
        keyed = client.get("/readyz", headers={"X-API-Key": API_KEY})
        assert keyed.status_code == 503 and keyed.json()["detail"].startswith("failed: ")
        assert "<reranker>" in keyed.json()["detail"]
        _no_paths(keyed.text, folder)


def test_a_json_boolean_for_a_number_and_a_number_for_a_boolean_are_422s(make_client):
    """pydantic's lax mode would read true as the price 1.0 and 0.0 as false: both are the
    caller's mistake, named; a query string's in_stock=1 / true still parse."""
    client = make_client(personal=None)
    for body, field in (
        ({"q": "drill", "max_price": True}, "max_price"),
        ({"q": "drill", "k": True}, "k"),
        ({"q": "drill", "explain": 0.0}, "explain"),
        ({"q": "drill", "in_stock": 1}, "in_stock"),
    ):
        answer = client.post("/search", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert field in answer.text
    assert client.get("/search", params={"q": "drill", "in_stock": "1"}).status_code == 200
    assert client.get("/search", params={"q": "drill", "in_stock": "true"}).status_code == 200
    assert client.post("/search", json={"q": "drill", "max_price": 100}).status_code == 200
