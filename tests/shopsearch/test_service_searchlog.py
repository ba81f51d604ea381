"""The service's search log: what /search served and /events received, its counters, erasure,
and a log written by the service training the same model as the hand-built event log."""

from __future__ import annotations

import json
import time
from collections import Counter

import polars as pl
import pytest
import torch

from personalization.privacy import Pseudonymizer
from personalization.searchlog import scan
from rerank.pipeline import SearchPipeline
from retrieval.retriever import Retriever
from shopsearch.service.routers import search as search_router
from training.config import LogTrainConfig, PersonalTrainConfig
from training.from_log import train_personal_from_log

ADMIN_KEY = "test-admin-key"
ALICE = "alice@example.com"


def _rows(client) -> pl.DataFrame:
    client.app.state.search_log.flush()
    return scan(client.app.state.settings.search_log).collect()


def test_each_search_and_event_is_logged_with_pseudonyms_only(
    make_client, tmp_path, sample_products
):
    brand = Counter(p.brand for p in sample_products if p.brand).most_common(1)[0][0]
    client = make_client(search_log=str(tmp_path / "log"), admin_key=ADMIN_KEY)
    got = client.post(
        "/search",
        json={
            "q": "cordless drill",
            "k": 2,
            "offset": 1,
            "user_id": ALICE,
            "session_id": "web-7",
            "max_price": 5000,
            "brands": [brand],
            "sort": "price:asc",
        },
    ).json()
    anon = client.get("/search", params={"q": "paint", "k": 3}).json()
    clicked = got["results"][1]["product_id"]
    posted = client.post(
        "/events",
        json={
            "events": [
                {  # a click names only its search: no session, no position
                    "user_id": ALICE,
                    "timestamp": time.time(),
                    "event": "click",
                    "product_id": clicked,
                    "search_id": got["search_id"],
                },
                {"user_id": ALICE, "timestamp": time.time(), "event": "click"},  # invalid
            ]
        },
    ).json()
    assert posted["logged"] == 1 and len(posted["rejected"]) == 1
    rows = _rows(client)
    text = rows.write_json()
    assert ALICE not in text and "web-7" not in text  # raw ids never stored
    search, anonymous, click = rows.to_dicts()
    pz = Pseudonymizer.from_dir(tmp_path / "profiles")
    assert search["search_id"] == got["search_id"] and search["event"] == "search"
    assert search["pseudonym"] == pz.pseudonym(ALICE)
    assert search["session"] == pz.session_pseudonym("web-7")
    assert search["query"] == "cordless drill" and search["offset"] == 1 and search["k"] == 2
    assert search["results"] == [r["product_id"] for r in got["results"]]
    assert search["scores"] == pytest.approx([r["score"] for r in got["results"]])
    assert search["relevance"] == pytest.approx([r["scores"]["relevance"] for r in got["results"]])
    assert search["filter"] == f'brand IN ["{brand}"] AND price <= 5000'
    assert search["sort"] == "price:asc"
    assert search["total_candidates"] == got["total_candidates"]
    assert search["took_ms"] > 0 and search["replica"]
    models = json.loads(search["models"])
    assert models["index"] and models["retriever"] and models["personal"]
    assert search["experiment"] is None and search["teams"] is None
    assert anonymous["pseudonym"] is None and anonymous["search_id"] == anon["search_id"]
    assert anonymous["results"] == [r["product_id"] for r in anon["results"]]
    assert click["event"] == "click" and click["search_id"] == got["search_id"]
    assert click["pseudonym"] == search["pseudonym"] and click["product_id"] == clicked
    metrics = client.get("/metrics").text
    assert 'shopsearch_search_log_rows_total{outcome="written"} 3.0' in metrics
    # erasure removes the rows, and says which segments it rewrote
    gone = client.delete(f"/users/{ALICE}", headers={"X-Admin-Key": ADMIN_KEY})
    assert gone.status_code == 200, gone.text
    body = gone.json()
    assert body["log_rows"] == 2 and len(body["log_segments"]) == 1 and not body["log_pending"]
    client.post("/search", json={"q": "drill", "user_id": ALICE})  # never logged again
    rows = _rows(client)
    assert rows["pseudonym"].drop_nulls().to_list() == []
    assert rows.height == 1


def test_without_profiles_the_log_keeps_its_own_key_and_takes_events(make_client, tmp_path):
    log = tmp_path / "log"
    client = make_client(search_log=str(log), profiles=None, personal=None)
    got = client.post("/search", json={"q": "drill", "k": 3, "user_id": "bob"}).json()
    event = {
        "user_id": "bob",
        "timestamp": time.time(),
        "event": "add_to_cart",
        "product_id": got["results"][0]["product_id"],
        "search_id": got["search_id"],
    }
    posted = client.post("/events", json={"events": [event]})
    assert posted.status_code == 200, posted.text
    assert posted.json()["logged"] == 1 and posted.json()["added"] == 0
    key = Pseudonymizer.from_dir(log)  # created there: pseudonyms survive a restart
    assert set(_rows(client)["pseudonym"]) == {key.pseudonym("bob")}
    client.__exit__(None, None, None)  # shutdown: flushed and rotated
    assert not list(log.glob("*.jsonl")) and len(list(log.glob("*.parquet"))) == 1


def test_an_unwritable_log_never_fails_a_search(make_client, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    client = make_client(search_log=str(blocker / "log"))
    for _ in range(3):
        assert client.get("/search", params={"q": "drill"}).status_code == 200
    client.app.state.search_log.flush()
    metrics = client.get("/metrics").text
    assert 'shopsearch_search_log_rows_total{outcome="failed"} 3.0' in metrics


def test_a_log_written_by_the_service_trains_the_same_model_as_the_hand_built_log(
    make_client, tmp_path, index_dir, tiny_encoder, monkeypatch
):
    """The same searches and clicks, once through the service (which logs what it served) and
    once as today's event log a front-end builds (search events with their shown list)."""
    log = tmp_path / "log"
    client = make_client(search_log=str(log), personal=None)
    start = time.time() - 30 * 86_400
    clock = iter(start + 3600.0 * i for i in range(1000))
    monkeypatch.setattr(search_router, "_clock", lambda: next(clock))
    queries = ["cordless drill", "paint roller", "faucet", "drill bits", "wood saw", "hammer"]
    hand_built, clicks = [], []
    for i in range(36):
        user, session = f"shopper{i % 5}", f"visit{i // 3}"
        params = {"q": queries[i % len(queries)], "k": 5, "user_id": user, "session_id": session}
        got = client.post("/search", json=params).json()
        assert len(got["results"]) == 5
        ts = start + 3600.0 * i
        shown = [r["product_id"] for r in got["results"]]
        hand_built.append(
            {
                "user_id": user,
                "timestamp": ts,
                "session_id": session,
                "event": "search",
                "query": params["q"],
                "search_id": got["search_id"],
                "results": shown,
            }
        )
        pick = shown[(i * 7) % 5 if i % 4 else 0]
        click = {
            "user_id": user,
            "timestamp": ts + 30,
            "event": "click" if i % 3 else "purchase",
            "product_id": pick,
            "search_id": got["search_id"],
        }
        clicks.append(click)
        hand_built.append({**click, "session_id": session})
    assert client.post("/events", json={"events": clicks}).json()["logged"] == 36
    client.__exit__(None, None, None)
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in hand_built))

    config = LogTrainConfig(
        val_days=0.25, model=PersonalTrainConfig(loss="listwise", seed=3, epochs=3)
    )
    weights = []
    for source, out in ((events_file, tmp_path / "from-events"), (log, tmp_path / "from-log")):
        pipeline = SearchPipeline(Retriever.open(index_dir, encoder=tiny_encoder), None, None)
        with pipeline:
            report = train_personal_from_log(source, pipeline, out, config, log=lambda _: None)
        assert report.train_searches >= 20 and report.val_searches >= 1
        assert report.log.interactions_attributed == 36
        weights.append(torch.load(out / "personal.pt"))
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-5, atol=1e-6)


def test_forget_user_command_removes_the_rows_from_the_search_log(tmp_path):
    from click.testing import CliRunner

    from personalization.searchlog import write_segment
    from personalization.searchlog_writer import log_pseudonymizer
    from shopsearch.cli import main

    log = tmp_path / "log"
    runner = CliRunner()
    log.mkdir()
    no_key = runner.invoke(main, ["forget-user", ALICE, "--search-log", str(log)])
    assert no_key.exit_code == 2 and "pseudonym.key" in no_key.output
    pz = log_pseudonymizer(log)
    segment = "20260101T000000.000000Z-host-1.parquet"
    write_segment(
        log / segment,
        [
            {"event": "search", "search_id": "a", "pseudonym": pz.pseudonym(ALICE)},
            {"event": "click", "search_id": "a", "pseudonym": pz.pseudonym(ALICE)},
            {"event": "search", "search_id": "b", "pseudonym": pz.pseudonym("bob")},
        ],
    )
    done = runner.invoke(main, ["forget-user", ALICE, "--search-log", str(log)])
    assert done.exit_code == 0, done.output
    assert "removed 2 rows" in done.output and segment in done.output
    assert scan(log).collect()["search_id"].to_list() == ["b"]
    neither = runner.invoke(main, ["forget-user", ALICE])
    assert neither.exit_code == 2 and "--search-log" in neither.output
