"""Personalized ranking: the fused model, the query-time pipeline, the CLI around profiles."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from indexer.build import index_catalog
from personalization.features import FEATURE_NAMES
from personalization.ingest import open_profiles
from personalization.personalizer import Personalizer
from personalization.ranker import HAS_HISTORY, PersonalFusion, PersonalRanker
from rerank.pipeline import SearchPipeline
from retrieval.retriever import Retriever
from retrieval.store import IndexLocation
from shopsearch.cli import main

F = len(FEATURE_NAMES)


def _ranker(seed: int = 0) -> PersonalRanker:
    torch.manual_seed(seed)
    return PersonalRanker(PersonalFusion(F, hidden=8, dropout=0.0))


def test_cold_shopper_gets_exactly_the_relevance_ranking():
    ranker = _ranker()
    rng = np.random.default_rng(0)
    cross = rng.normal(size=20).astype(np.float32)
    feats = rng.normal(size=(20, F)).astype(np.float32)
    feats[:, HAS_HISTORY] = 0.0
    scored = ranker.score(cross, feats, explain=True)
    assert np.all(scored.personal == 0.0)
    assert list(np.argsort(-scored.total)) == list(np.argsort(-cross))
    assert np.all(scored.contributions == 0.0)


def test_warm_shopper_gets_contributions_and_save_load_round_trip(tmp_path):
    ranker = _ranker(1)
    rng = np.random.default_rng(1)
    cross = rng.normal(size=5).astype(np.float32)
    feats = rng.normal(size=(5, F)).astype(np.float32)
    feats[:, HAS_HISTORY] = 1.0
    a = ranker.score(cross, feats, explain=True)
    assert np.any(a.personal != 0.0)
    assert a.contributions.shape == (5, F) and np.any(a.contributions != 0)
    loaded = PersonalRanker.load(ranker.save(tmp_path / "p"))
    b = loaded.score(cross, feats)
    np.testing.assert_allclose(a.total, b.total, rtol=1e-6)


@pytest.fixture()
def shop(tmp_path, sample_catalog, tiny_encoder):
    loc = IndexLocation(path=tmp_path / "index")
    index_catalog(sample_catalog, loc, encoder=tiny_encoder, progress=False)
    return loc


def _ts(day: int) -> str:
    return datetime(2026, 1, day, 12, tzinfo=timezone.utc).isoformat()


def _write_log(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_ingest_search_explain_and_forget(tmp_path, shop, tiny_encoder, sample_products):
    drills = [p.product_id for p in sample_products if p.category and "Drills" in p.category][:3]
    log = tmp_path / "events.jsonl"
    rows = [
        {
            "user_id": "alice@example.com",
            "timestamp": _ts(1),
            "session_id": "s1",
            "event": "search",
            "query": "drill",
        },
        *[
            {
                "user_id": "alice@example.com",
                "timestamp": _ts(1 + i),
                "session_id": "s1",
                "event": "purchase",
                "product_id": p,
                "position": 1,
            }
            for i, p in enumerate(drills)
        ],
        {
            "user_id": "bob",
            "timestamp": _ts(2),
            "session_id": "s2",
            "event": "teleport",
            "product_id": drills[0],
        },
        {
            "user_id": "bob",
            "timestamp": _ts(2),
            "session_id": "s2",
            "event": "click",
            "product_id": "NO-SUCH-SKU",
        },
        {
            "user_id": "bob",
            "timestamp": "yesterday",
            "session_id": "s2",
            "event": "click",
            "product_id": drills[0],
        },
    ]
    _write_log(log, rows)
    runner = CliRunner()
    profiles = tmp_path / "profiles"
    result = runner.invoke(
        main,
        [
            "events",
            "ingest",
            str(log),
            "--profiles",
            str(profiles),
            "--index",
            str(shop.path),
            "--rejects",
            str(tmp_path / "rej.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ingested 4 events" in result.stdout and "rejected 3" in result.stdout
    reasons = (tmp_path / "rej.csv").read_text()
    assert "teleport" in reasons and "NO-SUCH-SKU" in reasons
    assert b"alice@example.com" not in (profiles / "profiles.sqlite").read_bytes()

    store, pz = open_profiles(profiles)
    ranker = _ranker(2)
    relevance_only = SearchPipeline(Retriever.open(shop.path, encoder=tiny_encoder))
    baseline = relevance_only.search("cordless drill", k=10)
    pipe = SearchPipeline(relevance_only.retriever, None, Personalizer(ranker, store, pz))
    anonymous = pipe.search("cordless drill", k=10)
    cold = pipe.search("cordless drill", k=10, user_id="carol")
    assert [h.product_id for h in cold] == [h.product_id for h in anonymous]
    # the relevance-only pipeline's order, exactly, for anonymous and cold shoppers
    assert [h.product_id for h in anonymous] == [h.product_id for h in baseline]
    assert all(h.personal == 0.0 and h.because == () for h in cold)
    warm = pipe.search("cordless drill", k=10, user_id="alice@example.com")
    assert any(h.personal != 0.0 for h in warm)
    assert any(h.because for h in warm)
    name, value, contribution = next(h.because[0] for h in warm if h.because)
    assert name in FEATURE_NAMES and isinstance(value, float) and contribution != 0.0
    # the log's click counts for this query reach a warm shopper's features, not a cold one's
    from personalization.clickstats import ClickStats

    stats = ClickStats()
    shown = [h.product_id for h in baseline]
    stats.add("Cordless Drill", shown, [0] * (len(shown) - 1) + [3])
    ranker.click_stats = stats
    again = pipe.search("cordless drill", k=10, user_id="alice@example.com")
    assert {h.product_id: h.score for h in again} != {h.product_id: h.score for h in warm}
    cold_again = pipe.search("cordless drill", k=10, user_id="carol")
    assert [(h.product_id, h.score) for h in cold_again] == [(h.product_id, h.score) for h in cold]
    # a misspelled query reads the counts of what the shopper typed (the log's text), while
    # the ranking reads its correction
    ranker.click_stats = ClickStats()
    typo_plain = pipe.search("cordles drill", k=10, user_id="alice@example.com")
    assert typo_plain.corrected == "cordless drill"
    typo_stats = ClickStats()
    typo_stats.add("cordles drill", shown, [0] * (len(shown) - 1) + [3])
    ranker.click_stats = typo_stats
    typo_counted = pipe.search("cordles drill", k=10, user_id="alice@example.com")
    assert {h.product_id: h.score for h in typo_counted} != {
        h.product_id: h.score for h in typo_plain
    }
    profile = pipe.personal.profile("alice@example.com")
    assert profile.n_events == 3 and pipe._recent(profile).shape[1] == 32
    pipe.close()

    result = runner.invoke(main, ["forget-user", "alice@example.com", "--profiles", str(profiles)])
    assert result.exit_code == 0 and "rows removed" in result.stdout
    store, pz = open_profiles(profiles)
    assert store.profile(pz.pseudonym("alice@example.com")).n_events == 0
    store.close()


def test_taste_vector_adds_a_prefetch(shop, tiny_encoder, sample_products):
    with Retriever.open(shop.path, encoder=tiny_encoder) as r:
        target = next(
            p for p in sample_products if p.category and p.category.startswith("Plumbing")
        )
        vec = r.vectors([target.product_id])[target.product_id]
        plain = [h.product_id for h in r.search("cordless drill", k=20, mode="dense")]
        personal = [
            h.product_id for h in r.search("cordless drill", k=20, mode="dense", user_vector=vec)
        ]
        assert target.product_id not in plain
        assert target.product_id in personal
