"""The service's interleaving experiment: who is in it, the merged page, and what is logged."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pytest

import shopsearch.service.routers.search as search_router
from core.errors import ShopsearchError
from shopsearch.service import ServiceSettings

ALICE = "alice@example.com"
EXPERIMENT = {
    "interleave_share": 1.0,
    "interleave_name": "no-personal",
    "interleave_personal": "none",  # B: the same pipeline without personalization
}


@pytest.fixture()
def served(monkeypatch):
    """What each search served: (experiment, teams) per request."""
    got: list[tuple[str | None, list | None]] = []
    real = search_router.interleave

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        got.append((out.experiment, out.teams))
        return out

    monkeypatch.setattr(search_router, "interleave", spy)
    return got


def _warm(client, drills):
    events = [
        {
            "user_id": ALICE,
            "timestamp": datetime(2026, 1, 1 + i, tzinfo=timezone.utc).isoformat(),
            "session_id": "s1",
            "event": "purchase",
            "product_id": p,
        }
        for i, p in enumerate(drills)
    ]
    assert client.post("/events", json={"events": events}).json()["added"] == len(drills)


def test_share_one_interleaves_a_shopper_and_pages_continue(make_client, served, drills):
    client = make_client(**EXPERIMENT)
    _warm(client, drills)
    loaded = client.app.state.runtime.current
    assert loaded.interleave.pipeline.retriever is loaded.pipeline.retriever  # one index
    assert loaded.interleave.pipeline.personal is None
    query = {"q": "cordless drill", "k": 10, "user_id": ALICE}
    first = client.post("/search", json=query)
    assert first.status_code == 200, first.text
    experiment, teams = served[-1]
    assert experiment == "no-personal"
    assert len(teams) == 10 and set(teams) <= {"A", "B"}
    assert abs(teams.count("A") - teams.count("B")) <= 1
    body = first.json()
    assert "teams" not in first.text and "no-personal" not in first.text  # never shown
    ids = [r["product_id"] for r in body["results"]]
    assert len(set(ids)) == 10 and [r["rank"] for r in body["results"]] == list(range(1, 11))
    # each team's picks come in its own ranking's order
    a = loaded.pipeline.search("cordless drill", user_id=ALICE, k=10)
    b = loaded.interleave.pipeline.search("cordless drill", user_id=ALICE, k=10)
    a_ids, b_ids = [h.product_id for h in a], [h.product_id for h in b]
    assert a_ids != b_ids  # the warm shopper's personal ranking differs from B's
    for team, ranking in (("A", a_ids), ("B", b_ids)):
        mine = [i for i, t in zip(ids, teams, strict=True) if t == team]
        assert mine == [x for x in ranking if x in mine]
    # page 2 of the same search is the merged list's continuation, teams included
    page = client.post("/search", json={**query, "k": 5, "offset": 5}).json()
    assert [r["product_id"] for r in page["results"]] == ids[5:]
    assert served[-1] == ("no-personal", teams[5:])
    assert [r["rank"] for r in page["results"]] == [6, 7, 8, 9, 10]
    metrics = client.get("/metrics").text  # both pages counted, under the experiment's name
    assert 'shopsearch_interleaved_searches_total{experiment="no-personal"} 2.0' in metrics


def test_anonymous_opted_out_and_sorted_searches_are_not_interleaved(make_client, served):
    client = make_client(**EXPERIMENT)
    for request in (
        {"q": "cordless drill"},  # anonymous
        {"q": "cordless drill", "user_id": ALICE, "experiments": False},  # opted out
        {"q": "cordless drill", "user_id": ALICE, "sort": "price:asc"},  # the shopper's order
    ):
        got = client.post("/search", json=request)
        assert got.status_code == 200, got.text
        assert served[-1] == (None, None), request
    plain = client.get("/search", params={"q": "drill", "user_id": ALICE, "experiments": "false"})
    assert plain.status_code == 200 and served[-1] == (None, None)
    assert client.post("/search", json={"q": "drill", "experiments": 0}).status_code == 422
    # with interleave_anonymous, an anonymous search may take part (drawn by its query)
    anonymous = make_client(**EXPERIMENT, interleave_anonymous=True)
    assert anonymous.post("/search", json={"q": "cordless drill"}).status_code == 200
    assert served[-1][0] == "no-personal"


def test_share_zero_and_shoppers_outside_the_share(make_client, served):
    client = make_client()
    client.post("/search", json={"q": "drill", "user_id": ALICE})
    assert client.app.state.runtime.current.interleave is None
    assert served[-1] == (None, None)
    # a small share: most shoppers stay out, and each stays where it is
    small = make_client(**{**EXPERIMENT, "interleave_share": 0.2})
    ins = []
    for i in range(30):
        user = f"shopper-{i}"
        small.post("/search", json={"q": "drill", "user_id": user})
        ins.append(served[-1][0] is not None)
        small.post("/search", json={"q": "paint", "user_id": user})
        assert (served[-1][0] is not None) == ins[-1]
    assert 0 < sum(ins) < 20


def test_settings_refuse_an_experiment_without_a_name_or_a_challenger(tmp_path):
    base = {"index": str(tmp_path), "interleave_share": 0.5}
    with pytest.raises(ShopsearchError, match="SHOPSEARCH_INTERLEAVE_NAME"):
        ServiceSettings(**base)
    with pytest.raises(ShopsearchError, match="--interleave-reranker or --interleave-ranker"):
        ServiceSettings(**base, interleave_name="x")
    with pytest.raises(ShopsearchError, match="profile directory"):
        ServiceSettings(**base, interleave_name="x", interleave_personal=str(tmp_path))
    with pytest.raises(ShopsearchError, match="SHOPSEARCH_INTERLEAVE_SHARE"):
        ServiceSettings(index=str(tmp_path), interleave_share=1.5)
    ok = ServiceSettings(**base, interleave_name="x", interleave_reranker="none")
    env = ok.to_env()
    assert env["SHOPSEARCH_INTERLEAVE_SHARE"] == "0.5"
    assert ServiceSettings.from_env(env) == ok


def test_serve_options_reach_the_workers(index_dir, personal_model, tmp_path, monkeypatch):
    import os

    import uvicorn
    from click.testing import CliRunner

    from shopsearch.cli import main

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append(dict(os.environ)))
    saved = dict(os.environ)
    try:
        runner = CliRunner()
        args = ["serve", "--index", str(index_dir), "--profiles", str(tmp_path / "profiles")]
        args += ["--interleave-share", "0.25", "--interleave-name", "new-model"]
        args += ["--interleave-personal", str(personal_model), "--interleave-anonymous"]
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
        got = ServiceSettings.from_env(calls[-1])
        os.environ.clear()  # serve set the workers' variables in this process
        os.environ.update(saved)
        assert got.interleave_share == 0.25 and got.interleave_name == "new-model"
        assert got.interleave_personal == str(personal_model.resolve())
        assert got.interleave_anonymous is True and got.interleave_reranker is None
        bad = runner.invoke(main, [*args[:5], "--interleave-reranker", str(tmp_path / "no")])
        assert bad.exit_code == 2 and "--interleave-reranker" in bad.output
        unnamed = runner.invoke(main, [*args[:5], "--interleave-share", "0.5"])
        assert unnamed.exit_code == 2 and "INTERLEAVE_NAME" in unnamed.output
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_the_log_holds_experiment_and_teams_and_the_report_credits_clicks(
    make_client, tmp_path, drills
):
    import time as clock

    from analytics.interleaving import report
    from personalization.searchlog import scan

    client = make_client(**EXPERIMENT, search_log=str(tmp_path / "log"))
    _warm(client, drills)
    shown = client.post("/search", json={"q": "cordless drill", "k": 6, "user_id": ALICE}).json()
    client.post("/search", json={"q": "cordless drill", "k": 6})  # anonymous: not in it
    first = shown["results"][0]["product_id"]
    click = {
        "user_id": ALICE,
        "timestamp": clock.time(),
        "event": "click",
        "product_id": first,
        "search_id": shown["search_id"],
    }
    assert client.post("/events", json={"events": [click]}).status_code == 200
    client.app.state.search_log.flush()
    rows = scan(tmp_path / "log").filter(pl.col("event") == "search").collect()
    by_id = {r["search_id"]: r for r in rows.iter_rows(named=True)}
    logged = by_id[shown["search_id"]]
    assert logged["experiment"] == "no-personal" and len(logged["teams"]) == 6
    assert logged["results"] == [r["product_id"] for r in shown["results"]]
    others = [r for sid, r in by_id.items() if sid != shown["search_id"]]
    assert others and all(r["experiment"] is None and r["teams"] is None for r in others)
    (result,) = report(tmp_path / "log")
    winner = logged["teams"][0]
    assert result.searches == 1
    assert (result.wins, result.losses) == ((1, 0) if winner == "A" else (0, 1))


@pytest.fixture(scope="module")
def learned_ranker(tmp_path_factory):
    """A tiny learned final stage (trained without a cross-encoder), saved to a folder."""
    import lightgbm as lgb
    import numpy as np

    from rerank.ltr import FEATURE_NAMES, LearnedRanker

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(FEATURE_NAMES)))
    y = (x[:, FEATURE_NAMES.index("title_covered")] > 0).astype(int)
    params = {"objective": "lambdarank", "verbosity": -1, "min_data_in_leaf": 5}
    booster = lgb.train(params, lgb.Dataset(x, label=y, group=[20] * 20), 10)
    return LearnedRanker(booster, {"reranker": None}).save(tmp_path_factory.mktemp("ltr") / "r")


def test_a_learned_stage_as_the_challenger_is_served_and_logged(
    make_client, served, learned_ranker, tmp_path, drills
):
    from personalization.searchlog import scan
    from rerank.ltr import LearnedRanker

    experiment = {"interleave_share": 1.0, "interleave_name": "learned"}
    client = make_client(
        **experiment, interleave_ranker=str(learned_ranker), search_log=str(tmp_path / "log")
    )
    body = {"q": "cordless drill", "k": 8, "user_id": ALICE}
    shown = client.post("/search", json=body).json()
    assert served[-1][0] == "learned" and {"A", "B"} <= set(served[-1][1])
    challenger = client.app.state.runtime.current.interleave
    assert challenger.pipeline.ranker is not None
    assert client.app.state.runtime.current.pipeline.ranker is None
    client.app.state.search_log.flush()
    rows = scan(tmp_path / "log").filter(pl.col("event") == "search").collect()
    (logged,) = [r for r in rows.iter_rows(named=True) if r["search_id"] == shown["search_id"]]
    fingerprint = LearnedRanker.open(learned_ranker).fingerprint
    assert f'"ranker": "{fingerprint}"' in logged["models"]


def test_a_challenger_that_is_ranker_a_itself_is_refused(make_client, personal_model):
    experiment = {"interleave_share": 1.0, "interleave_name": "same"}
    for same in (
        {"interleave_reranker": "none"},  # A has no cross-encoder either
        {"interleave_ranker": "none"},  # nor a learned stage
        {"interleave_personal": str(personal_model)},  # A's personal model, from its folder
    ):
        client = make_client(**experiment, **same)  # the service starts, not ready
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "ranker A itself" in ready.json()["detail"]
        assert client.post("/search", json={"q": "drill"}).status_code == 503
    assert make_client(**experiment, interleave_personal="none").get("/readyz").status_code == 200
